"""Drop-in shims that give other libraries' APIs on top of matry.

``from matry.compat import hnswlib`` replaces ``import hnswlib`` (hnswlib 0.8's Python API).
"""
