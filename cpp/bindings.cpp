// pybind11 glue only: check and convert buffers under the GIL, release it for the compute, map
// core exceptions to Python ones. No index logic lives here.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>

#include "errors.hpp"
#include "id_set.hpp"
#include "index.hpp"
#include "io.hpp"
#include "kernels/dispatch.hpp"
#include "thread_pool.hpp"

namespace py = pybind11;
using matry::Index;

namespace {

// Aligned too: an array viewing a buffer at an odd offset (np.frombuffer, out-of-band pickle
// buffers from Ray or Dask) is copied, since loading a float from it is undefined behaviour.
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast | kAligned>;
using IdArray = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast | kAligned>;

// Rows of a 2-D float32 array with `dim` columns.
std::size_t checked_rows(const FloatArray& rows, std::size_t dim, const char* argument) {
  if (rows.ndim() != 2) {
    throw matry::InvalidArgument(std::string(argument) + ": expected a 2-D array, got " +
                                 std::to_string(rows.ndim()) + "-D");
  }
  if (static_cast<std::size_t>(rows.shape(1)) != dim) {
    throw matry::InvalidArgument(std::string(argument) + ": expected " + std::to_string(dim) +
                                 " columns (the index dim), got " + std::to_string(rows.shape(1)));
  }
  return static_cast<std::size_t>(rows.shape(0));
}

std::size_t checked_ids(const IdArray& ids, const char* argument) {
  if (ids.ndim() != 1) throw matry::InvalidArgument(std::string(argument) + ": expected 1-D");
  return static_cast<std::size_t>(ids.shape(0));
}

py::dict header_dict(const matry::FileHeader& h, const std::string& metadata) {
  py::dict out;
  out["format_version"] = h.format_version;
  out["quantization"] = matry::quantization_of(h);
  out["metric"] = matry::metric_name(static_cast<matry::Metric>(h.metric));
  out["dim"] = h.dim;
  out["node_count"] = h.node_count;
  out["count"] = h.live_count;
  out["M"] = h.M;
  out["ef_construction"] = h.ef_construction;
  out["ef"] = h.ef;
  out["seed"] = h.seed;
  out["prefix_dim"] = h.prefix_dim;
  out["has_rotation"] = h.rotation_floats != 0;
  out["metadata_json"] = py::bytes(metadata);
  return out;
}

// The kernels of a named SIMD level, or the dispatched ones.
const matry::kernels::KernelTable& kernels_of(const std::optional<std::string>& level) {
  return level ? matry::kernels::kernels_for_level(*level) : matry::kernels::active_kernels();
}

float run_pair_kernel(const FloatArray& a, const FloatArray& b,
                      const std::optional<std::string>& level, bool l2) {
  if (a.ndim() != 1 || b.ndim() != 1 || a.shape(0) != b.shape(0)) {
    throw matry::InvalidArgument("a, b: expected two 1-D arrays of the same length");
  }
  const matry::kernels::KernelTable& table = kernels_of(level);
  const auto n = static_cast<std::size_t>(a.shape(0));
  return l2 ? table.l2sq(a.data(), b.data(), n) : table.dot(a.data(), b.data(), n);
}

template <typename T>
using ContiguousArray = py::array_t<T, py::array::c_style | py::array::forcecast | kAligned>;

// An int8-kernel argument as a C-contiguous array of exactly dtype T. Values are never cast: a
// wrapped or truncated code would give a silently wrong product, so other dtypes are refused.
template <typename T>
ContiguousArray<T> exact_dtype_array(const py::object& object, const char* argument,
                                     const char* dtype) {
  if (!py::isinstance<py::array_t<T>>(object)) {
    const std::string got = py::isinstance<py::array>(object)
                                ? "dtype " + py::str(object.attr("dtype")).cast<std::string>()
                                : py::repr(py::type::handle_of(object)).cast<std::string>();
    throw matry::InvalidArgument(std::string(argument) + ": expected a numpy " + dtype +
                                 " array, got " + got);
  }
  return ContiguousArray<T>::ensure(object);
}

void check_code_length(std::size_t n, const char* arguments) {
  if (n > matry::kernels::kMaxCodeLength) {
    throw matry::InvalidArgument(std::string(arguments) + ": length " + std::to_string(n) +
                                 " is over the int8 kernel limit of " +
                                 std::to_string(matry::kernels::kMaxCodeLength));
  }
}

py::tuple loaded(std::unique_ptr<Index> index, const std::string& metadata) {
  return py::make_tuple(std::move(index), py::bytes(metadata));
}

void check_filters(const std::optional<std::vector<const matry::IdSet*>>& filters, std::size_t n) {
  if (filters && filters->size() != n) {
    throw matry::InvalidArgument("filter: a list of filters needs one per query row (" +
                                 std::to_string(n) + "), got " + std::to_string(filters->size()));
  }
}

py::tuple run_search(const Index& ix, const FloatArray& queries, std::size_t k, std::size_t ef,
                     std::size_t prefix_dim, std::size_t rerank, std::size_t num_threads,
                     const matry::IdSet* filter,
                     const std::optional<std::vector<const matry::IdSet*>>& filters,
                     int filter_path, bool with_stats,
                     const std::function<bool(std::int64_t)>& accept_id = nullptr) {
  const std::size_t n = checked_rows(queries, ix.dim(), "queries");
  if (k < 1) throw matry::InvalidArgument("k: must be >= 1");
  if (filter_path < 0 || filter_path > 2) {
    throw matry::InvalidArgument("filter_path: expected 0 (auto), 1 (graph) or 2 (brute force)");
  }
  check_filters(filters, n);
  py::array_t<std::int64_t> ids({n, k});
  py::array_t<float> distances({n, k});
  matry::SearchOptions options;
  options.k = k;
  options.ef = ef;
  options.prefix_dim = prefix_dim;
  options.rerank = rerank;
  options.num_threads = num_threads;
  options.filter = filter;
  options.filters = filters ? filters->data() : nullptr;
  options.filter_path = static_cast<matry::FilterPath>(filter_path);
  // pybind11's std::function wrapper takes the GIL for each call, from any thread.
  if (accept_id) options.accept_id = &accept_id;
  py::array_t<std::uint8_t> brute_force(with_stats ? n : 0);
  py::array_t<std::uint64_t> computed(with_stats ? n : 0);
  matry::SearchStats stats;
  if (with_stats) {
    stats.brute_force = brute_force.mutable_data();
    stats.distances = computed.mutable_data();
  }
  std::int64_t* id_out = ids.mutable_data();
  float* distance_out = distances.mutable_data();
  {
    py::gil_scoped_release release;
    ix.search(queries.data(), n, options, id_out, distance_out, stats);
  }
  if (with_stats) return py::make_tuple(ids, distances, brute_force, computed);
  return py::make_tuple(ids, distances);
}

// A Python stream's write(): the sink hands it bytes objects of at most kChunkBytes (copies:
// a memoryview of the index's memory could outlive the call in the stream's hands).
class PythonWriteSink : public matry::ByteSink {
 public:
  explicit PythonWriteSink(py::object write) : write_(std::move(write)) {}
  void write(const void* data, std::size_t bytes) override {
    const auto* cursor = static_cast<const char*>(data);
    py::gil_scoped_acquire acquire;
    while (bytes > 0) {
      const std::size_t chunk = std::min(bytes, kChunkBytes);
      write_(py::bytes(cursor, chunk));
      cursor += chunk;
      bytes -= chunk;
    }
  }

 private:
  static constexpr std::size_t kChunkBytes = std::size_t{1} << 20;
  py::object write_;
};

// A Python stream's read(n), asked for at most kChunkBytes at a time.
class PythonReadSource : public matry::ByteSource {
 public:
  explicit PythonReadSource(py::object read) : read_(std::move(read)) {}
  std::size_t read_some(void* to, std::size_t bytes) override {
    py::gil_scoped_acquire acquire;
    const py::object got = read_(std::min(bytes, kChunkBytes));
    if (!PyBytes_Check(got.ptr())) {
      throw matry::InvalidArgument(
          "file: read() must return bytes (open the file in binary "
          "mode), got " +
          py::str(py::type::handle_of(got)).cast<std::string>());
    }
    char* data = nullptr;
    Py_ssize_t size = 0;
    PyBytes_AsStringAndSize(got.ptr(), &data, &size);
    if (static_cast<std::size_t>(size) > bytes) {
      throw matry::InvalidArgument("file: read(n) returned more than n bytes");
    }
    std::memcpy(to, data, static_cast<std::size_t>(size));
    return static_cast<std::size_t>(size);
  }

 private:
  static constexpr std::size_t kChunkBytes = std::size_t{1} << 22;
  py::object read_;
};

// to_bytes() straight into the bytes object it returns: allocated once at the announced size.
class PythonBytesSink : public matry::ByteSink {
 public:
  void begin(std::uint64_t total_bytes) override {
    py::gil_scoped_acquire acquire;
    bytes_ = py::reinterpret_steal<py::object>(
        PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(total_bytes)));
    if (!bytes_) throw py::error_already_set();
    data_ = PyBytes_AsString(bytes_.ptr());
    capacity_ = total_bytes;
  }
  void write(const void* data, std::size_t bytes) override {
    if (written_ + bytes > capacity_) throw std::logic_error("to_bytes: more than announced");
    std::memcpy(data_ + written_, data, bytes);
    written_ += bytes;
  }
  py::object take() {
    if (written_ != capacity_) throw std::logic_error("to_bytes: less than announced");
    return std::move(bytes_);
  }

 private:
  py::object bytes_;
  char* data_ = nullptr;
  std::uint64_t capacity_ = 0;
  std::uint64_t written_ = 0;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "matry's C++ core (private: use matry.Index)";

  static py::exception<matry::CorruptIndex> corrupt_error(m, "CorruptIndexError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const matry::CorruptIndex& e) {
      py::set_error(corrupt_error, e.what());
    } catch (const matry::KeyNotFound& e) {
      py::set_error(PyExc_KeyError, e.what());
    } catch (const matry::IoError& e) {
      py::set_error(PyExc_OSError, e.what());
    } catch (const matry::InvalidArgument& e) {
      py::set_error(PyExc_ValueError, e.what());
    }
  });

  m.attr("FORMAT_VERSION") = matry::kFormatVersion;
  m.attr("MAX_M") = matry::graph::kMaxM;
  m.def("max_threads", &matry::max_threads);
  m.def("simd_level", [] { return std::string(matry::kernels::active_kernels().name); });
  m.def("compiled_simd_levels", &matry::kernels::compiled_levels);
  m.def("supported_simd_levels", &matry::kernels::supported_levels);
  m.def(
      "dot",
      [](const FloatArray& a, const FloatArray& b, const std::optional<std::string>& level) {
        return run_pair_kernel(a, b, level, false);
      },
      py::arg("a"), py::arg("b"), py::arg("level") = py::none());
  m.def(
      "l2sq",
      [](const FloatArray& a, const FloatArray& b, const std::optional<std::string>& level) {
        return run_pair_kernel(a, b, level, true);
      },
      py::arg("a"), py::arg("b"), py::arg("level") = py::none());
  // rows @ query with one kernel, looped in C++: the kernel micro-benchmark times this, so the
  // Python call is spread over many products instead of dwarfing a single one.
  m.def(
      "dot_rows",
      [](const FloatArray& query, const FloatArray& rows, const std::optional<std::string>& level) {
        if (query.ndim() != 1 || rows.ndim() != 2 || rows.shape(1) != query.shape(0)) {
          throw matry::InvalidArgument(
              "query, rows: expected a 1-D query and 2-D rows of its length");
        }
        const matry::kernels::KernelTable& table = kernels_of(level);
        const auto count = static_cast<std::size_t>(rows.shape(0));
        const auto dim = static_cast<std::size_t>(rows.shape(1));
        py::array_t<float> out(static_cast<py::ssize_t>(count));
        float* products = out.mutable_data();
        const float* q = query.data();
        const float* base = rows.data();
        {
          py::gil_scoped_release release;
          for (std::size_t i = 0; i < count; ++i) products[i] = table.dot(q, base + i * dim, dim);
        }
        return out;
      },
      py::arg("query"), py::arg("rows"), py::arg("level") = py::none());
  m.def(
      "dot_u8s8",
      [](const py::object& codes, const py::object& query,
         const std::optional<std::string>& level) {
        const auto code_array = exact_dtype_array<std::uint8_t>(codes, "codes", "uint8");
        const auto query_array = exact_dtype_array<std::int8_t>(query, "query", "int8");
        if (code_array.ndim() != 1 || query_array.ndim() != 1 ||
            code_array.shape(0) != query_array.shape(0)) {
          throw matry::InvalidArgument("codes, query: expected two 1-D arrays of the same length");
        }
        const auto n = static_cast<std::size_t>(code_array.shape(0));
        check_code_length(n, "codes, query");
        const matry::kernels::KernelTable& table = kernels_of(level);
        return table.dot_u8s8(code_array.data(), query_array.data(), n);
      },
      py::arg("codes"), py::arg("query"), py::arg("level") = py::none());
  // codes_rows @ query with the int8 kernel, looped in C++ like dot_rows (the benchmarks time it).
  m.def(
      "dot_u8s8_rows",
      [](const py::object& query, const py::object& codes_rows,
         const std::optional<std::string>& level) {
        const auto query_array = exact_dtype_array<std::int8_t>(query, "query", "int8");
        const auto rows_array = exact_dtype_array<std::uint8_t>(codes_rows, "codes_rows", "uint8");
        if (query_array.ndim() != 1 || rows_array.ndim() != 2 ||
            rows_array.shape(1) != query_array.shape(0)) {
          throw matry::InvalidArgument(
              "query, codes_rows: expected a 1-D query and 2-D codes_rows of its length");
        }
        const auto count = static_cast<std::size_t>(rows_array.shape(0));
        const auto dim = static_cast<std::size_t>(rows_array.shape(1));
        check_code_length(dim, "query, codes_rows");
        const matry::kernels::CodeKernel kernel = kernels_of(level).dot_u8s8;
        py::array_t<std::int32_t> out(static_cast<py::ssize_t>(count));
        std::int32_t* products = out.mutable_data();
        const std::int8_t* q = query_array.data();
        const std::uint8_t* base = rows_array.data();
        {
          py::gil_scoped_release release;
          for (std::size_t i = 0; i < count; ++i) products[i] = kernel(base + i * dim, q, dim);
        }
        return out;
      },
      py::arg("query"), py::arg("codes_rows"), py::arg("level") = py::none());
  m.def(
      "read_header",
      [](const std::string& path) {
        std::string metadata;
        matry::FileHeader header;
        {
          py::gil_scoped_release release;
          header = matry::read_header(path, metadata);
        }
        return header_dict(header, metadata);
      },
      py::arg("path"));

  py::class_<matry::IdSet, std::shared_ptr<matry::IdSet>>(m, "IdSet")
      .def_static(
          "from_ids",
          [](const IdArray& ids) {
            const std::size_t n = checked_ids(ids, "filter");
            py::gil_scoped_release release;
            return std::make_shared<matry::IdSet>(matry::IdSet::from_ids(ids.data(), n));
          },
          py::arg("ids"))
      .def_static(
          "from_mask",
          [](const py::array_t<bool, py::array::c_style | kAligned>& mask) {
            if (mask.ndim() != 1) throw matry::InvalidArgument("filter: a mask must be 1-D");
            const auto* data = reinterpret_cast<const std::uint8_t*>(mask.data());
            const auto n = static_cast<std::size_t>(mask.shape(0));
            py::gil_scoped_release release;
            return std::make_shared<matry::IdSet>(matry::IdSet::from_mask(data, n));
          },
          py::arg("mask"))
      .def("__len__", &matry::IdSet::size)
      .def("__contains__", &matry::IdSet::contains, py::arg("id"))
      .def_property_readonly("id_bound", &matry::IdSet::id_bound)
      .def_property_readonly("memory_bytes", &matry::IdSet::memory_bytes)
      .def("ids", [](const matry::IdSet& set) {
        py::array_t<std::int64_t> out(static_cast<py::ssize_t>(set.size()));
        std::int64_t* data = out.mutable_data();
        std::size_t at = 0;
        set.for_each([&](std::int64_t id) { data[at++] = id; });
        return out;
      });

  py::class_<Index>(m, "Index")
      .def(py::init([](std::size_t dim, const std::string& metric, std::uint32_t M,
                       std::uint32_t ef_construction, std::uint64_t seed, std::size_t prefix_dim,
                       bool require_unit_norm, const std::string& quantization,
                       const std::string& int8_mode, bool build_on_codes) {
             matry::IndexParams params;
             params.dim = dim;
             params.metric = matry::parse_metric(metric);
             params.M = M;
             params.ef_construction = ef_construction;
             params.seed = seed;
             params.prefix_dim = prefix_dim;
             params.require_unit_norm = require_unit_norm;
             params.quantization = matry::parse_quantization(quantization);
             if (int8_mode == "per_vector") {
               params.int8_mode = matry::quant::Int8Mode::per_vector;
             } else if (int8_mode == "per_dimension") {
               params.int8_mode = matry::quant::Int8Mode::per_dimension;
             } else {
               throw matry::InvalidArgument(
                   "int8_mode: expected 'per_vector' or 'per_dimension', got '" + int8_mode + "'");
             }
             params.build_on_codes = build_on_codes;
             return std::make_unique<Index>(params);
           }),
           py::arg("dim"), py::arg("metric") = "cosine", py::arg("M") = 16,
           py::arg("ef_construction") = 200, py::arg("seed") = 0, py::arg("prefix_dim") = 0,
           py::arg("require_unit_norm") = true, py::arg("quantization") = "none",
           py::arg("int8_mode") = "per_vector", py::arg("build_on_codes") = true)
      .def_property_readonly("read_only", &Index::read_only)
      .def_property_readonly(
          "quantization",
          [](const Index& ix) { return matry::quantization_name(ix.params().quantization); })
      .def_property_readonly("dim", &Index::dim)
      .def_property_readonly("metric",
                             [](const Index& ix) { return matry::metric_name(ix.params().metric); })
      .def_property_readonly("M", [](const Index& ix) { return ix.params().M; })
      .def_property_readonly("ef_construction",
                             [](const Index& ix) { return ix.params().ef_construction; })
      .def_property_readonly("seed", [](const Index& ix) { return ix.params().seed; })
      .def_property_readonly("prefix_dim", [](const Index& ix) { return ix.params().prefix_dim; })
      .def_property_readonly("require_unit_norm",
                             [](const Index& ix) { return ix.params().require_unit_norm; })
      .def_property("ef", &Index::ef, &Index::set_ef)
      // Every call that takes an index lock releases the GIL first: a writer holding the lock may
      // be waiting for the GIL (the Ctrl-C poll between chunks of an add).
      .def_property_readonly(
          "node_count",
          py::cpp_function(&Index::node_count, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly(
          "capacity", py::cpp_function(&Index::capacity, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly(
          "memory_bytes",
          py::cpp_function(&Index::memory_bytes, py::call_guard<py::gil_scoped_release>()))
      .def_property_readonly("simd_level", &Index::simd_level)
      .def("__len__", &Index::size, py::call_guard<py::gil_scoped_release>())
      .def(
          "add",
          [](Index& ix, const FloatArray& vectors, const std::optional<IdArray>& ids,
             std::size_t num_threads, bool replace) {
            const std::size_t n = checked_rows(vectors, ix.dim(), "vectors");
            const std::int64_t* id_data = nullptr;
            if (ids) {
              if (checked_ids(*ids, "ids") != n) {
                throw matry::InvalidArgument("ids: expected " + std::to_string(n) +
                                             " ids (one per row of vectors), got " +
                                             std::to_string(ids->shape(0)));
              }
              id_data = ids->data();
            }
            std::vector<std::int64_t> assigned;
            bool completed = false;
            {
              py::gil_scoped_release release;
              // Polled between chunks: a pending Ctrl-C stops the add after a consistent chunk.
              const auto interrupted = [] {
                py::gil_scoped_acquire acquire;
                return PyErr_CheckSignals() != 0;
              };
              completed =
                  ix.add(vectors.data(), n, id_data, num_threads, replace, interrupted, assigned);
            }
            if (!completed) throw py::error_already_set();
            return py::array_t<std::int64_t>(static_cast<py::ssize_t>(assigned.size()),
                                             assigned.data());
          },
          py::arg("vectors"), py::arg("ids") = py::none(), py::arg("num_threads") = 0,
          py::arg("replace") = false)
      .def(
          "search",
          [](const Index& ix, const FloatArray& queries, std::size_t k, std::size_t ef,
             std::size_t prefix_dim, std::size_t rerank, std::size_t num_threads,
             const matry::IdSet* filter,
             const std::optional<std::vector<const matry::IdSet*>>& filters, int filter_path,
             const std::function<bool(std::int64_t)>& accept_id, bool with_stats) {
            return run_search(ix, queries, k, ef, prefix_dim, rerank, num_threads, filter, filters,
                              filter_path, with_stats, accept_id);
          },
          py::arg("queries"), py::arg("k") = 10, py::arg("ef") = 0, py::arg("prefix_dim") = 0,
          py::arg("rerank") = 0, py::arg("num_threads") = 0, py::arg("filter") = nullptr,
          py::arg("filters") = py::none(), py::arg("filter_path") = 0,
          py::arg("accept_id") = nullptr, py::arg("with_stats") = false)
      .def(
          "exact_search",
          [](const Index& ix, const FloatArray& queries, std::size_t k, std::size_t num_threads,
             const matry::IdSet* filter,
             const std::optional<std::vector<const matry::IdSet*>>& filters) {
            const std::size_t n = checked_rows(queries, ix.dim(), "queries");
            if (k < 1) throw matry::InvalidArgument("k: must be >= 1");
            check_filters(filters, n);
            py::array_t<std::int64_t> ids({n, k});
            py::array_t<float> distances({n, k});
            std::int64_t* id_out = ids.mutable_data();
            float* distance_out = distances.mutable_data();
            {
              py::gil_scoped_release release;
              ix.exact_search(queries.data(), n, k, num_threads, id_out, distance_out, filter,
                              filters ? filters->data() : nullptr);
            }
            return py::make_tuple(ids, distances);
          },
          py::arg("queries"), py::arg("k") = 10, py::arg("num_threads") = 0,
          py::arg("filter") = nullptr, py::arg("filters") = py::none())
      .def(
          "search_radius",
          [](const Index& ix, const FloatArray& queries, float radius, std::size_t max_results,
             std::size_t ef, bool exact, const matry::IdSet* filter, std::size_t num_threads) {
            const std::size_t n = checked_rows(queries, ix.dim(), "queries");
            std::vector<std::vector<std::pair<std::int64_t, float>>> found;
            {
              py::gil_scoped_release release;
              ix.search_radius(queries.data(), n, radius, max_results, ef, exact, filter,
                               num_threads, found);
            }
            py::list out;
            for (const auto& pairs : found) {
              py::array_t<std::int64_t> ids(static_cast<py::ssize_t>(pairs.size()));
              py::array_t<float> distances(static_cast<py::ssize_t>(pairs.size()));
              std::int64_t* id_data = ids.mutable_data();
              float* distance_data = distances.mutable_data();
              for (std::size_t j = 0; j < pairs.size(); ++j) {
                id_data[j] = pairs[j].first;
                distance_data[j] = pairs[j].second;
              }
              out.append(py::make_tuple(ids, distances));
            }
            return out;
          },
          py::arg("queries"), py::arg("radius"), py::arg("max_results") = 0, py::arg("ef") = 0,
          py::arg("exact") = false, py::arg("filter") = nullptr, py::arg("num_threads") = 0)
      .def_property_readonly(
          "id_bound", py::cpp_function(&Index::id_bound, py::call_guard<py::gil_scoped_release>()))
      .def(
          "first_missing",
          [](const Index& ix, const IdArray& ids) {
            const std::size_t n = checked_ids(ids, "ids");
            py::gil_scoped_release release;
            return ix.first_missing(ids.data(), n);
          },
          py::arg("ids"))
      .def("prefers_brute_force", &Index::prefers_brute_force, py::arg("allowed"), py::arg("ef"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "remove",
          [](Index& ix, const IdArray& ids) {
            const std::size_t n = checked_ids(ids, "ids");
            py::gil_scoped_release release;
            ix.remove(ids.data(), n);
          },
          py::arg("ids"))
      .def(
          "restore",
          [](Index& ix, const IdArray& ids) {
            const std::size_t n = checked_ids(ids, "ids");
            py::gil_scoped_release release;
            ix.restore(ids.data(), n);
          },
          py::arg("ids"))
      .def("reorder", &Index::reorder, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly(
          "entry_id", py::cpp_function(&Index::entry_id, py::call_guard<py::gil_scoped_release>()))
      .def(
          "compact",
          [](Index& ix, std::size_t num_threads, int mode) {
            if (mode < 0 || mode > 2) {
              throw matry::InvalidArgument("mode: expected 0 (auto), 1 (repair) or 2 (rebuild)");
            }
            py::gil_scoped_release release;
            return ix.compact(num_threads, static_cast<matry::CompactMode>(mode));
          },
          py::arg("num_threads") = 0, py::arg("mode") = 0)
      .def("contains", &Index::contains, py::arg("id"), py::call_guard<py::gil_scoped_release>())
      .def(
          "get",
          [](const Index& ix, const IdArray& ids) {
            const std::size_t n = checked_ids(ids, "ids");
            py::array_t<float> out({n, ix.dim()});
            float* out_data = out.mutable_data();
            {
              py::gil_scoped_release release;
              ix.get(ids.data(), n, out_data);
            }
            return out;
          },
          py::arg("ids"))
      .def("ids",
           [](const Index& ix) {
             std::vector<std::int64_t> live;
             {
               py::gil_scoped_release release;
               live = ix.ids();
             }
             return py::array_t<std::int64_t>(static_cast<py::ssize_t>(live.size()), live.data());
           })
      .def_property_readonly("rotation",
                             [](const Index& ix) -> py::object {
                               std::vector<float> r;
                               {
                                 py::gil_scoped_release release;
                                 r = ix.rotation();
                               }
                               if (r.empty()) return py::none();
                               py::array_t<float> out({ix.dim(), ix.dim()});
                               std::copy(r.begin(), r.end(), out.mutable_data());
                               return std::move(out);
                             })
      .def(
          "set_rotation",
          [](Index& ix, const std::optional<FloatArray>& rotation) {
            std::vector<float> values;
            if (rotation) {
              if (rotation->ndim() != 2 ||
                  static_cast<std::size_t>(rotation->shape(0)) != ix.dim() ||
                  static_cast<std::size_t>(rotation->shape(1)) != ix.dim()) {
                throw matry::InvalidArgument("rotation: expected a (dim, dim) matrix");
              }
              values.assign(rotation->data(), rotation->data() + rotation->size());
            }
            py::gil_scoped_release release;
            ix.set_rotation(std::move(values));
          },
          py::arg("rotation"))
      .def(
          "save",
          [](const Index& ix, const std::string& path, const std::string& metadata) {
            py::gil_scoped_release release;
            ix.save(path, metadata);
          },
          py::arg("path"), py::arg("metadata") = "{}")
      .def(
          "to_bytes",
          [](const Index& ix, const std::string& metadata) {
            PythonBytesSink sink;
            {
              py::gil_scoped_release release;
              ix.save_to(sink, metadata);
            }
            return sink.take();
          },
          py::arg("metadata") = "{}")
      .def(
          "save_to",
          [](const Index& ix, py::object write, const std::string& metadata) {
            PythonWriteSink sink(std::move(write));
            py::gil_scoped_release release;
            ix.save_to(sink, metadata);
          },
          py::arg("write"), py::arg("metadata") = "{}")
      .def_static(
          "load_from",
          [](py::object read) {
            PythonReadSource source(std::move(read));
            std::string metadata;
            std::unique_ptr<Index> index;
            {
              py::gil_scoped_release release;
              index = Index::load_from(source, metadata);
            }
            return loaded(std::move(index), metadata);
          },
          py::arg("read"))
      .def_static(
          "load",
          [](const std::string& path, bool mmap) {
            std::string metadata;
            std::unique_ptr<Index> index;
            {
              py::gil_scoped_release release;
              index = Index::load(path, metadata, mmap);
            }
            return loaded(std::move(index), metadata);
          },
          py::arg("path"), py::arg("mmap") = false)
      .def_static(
          "from_bytes",
          [](const py::buffer& data) {
            // Read in place: a bytes object is immutable, and an exported buffer (bytearray,
            // memoryview) cannot be resized while this holds it.
            const py::buffer_info view = data.request();
            if (view.ndim != 1 || view.strides[0] != view.itemsize) {
              throw matry::InvalidArgument("data: expected bytes or a contiguous 1-D buffer");
            }
            std::string metadata;
            std::unique_ptr<Index> index;
            {
              py::gil_scoped_release release;
              index =
                  Index::from_buffer(static_cast<const unsigned char*>(view.ptr),
                                     static_cast<std::size_t>(view.size * view.itemsize), metadata);
            }
            return loaded(std::move(index), metadata);
          },
          py::arg("data"));
}
