// Index = vector store + HNSW graph + the kernels resolved at construction. Owns validation of
// everything that reaches it (the Python layer validates again, with friendlier messages).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "graph/hnsw.hpp"
#include "id_set.hpp"
#include "io.hpp"
#include "kernels/kernels.hpp"
#include "quant/int8.hpp"
#include "store.hpp"

namespace matry {

enum class Metric : std::uint32_t { cosine = 0, ip = 1, l2 = 2 };

Metric parse_metric(const std::string& name);
const char* metric_name(Metric metric);

// What the graph is traversed on: the f32 rows, or int8 codes beside the links (the f32 rows
// are then read only by the rerank and by get()).
enum class Quantization : std::uint32_t { none = 0, int8 = 1 };

Quantization parse_quantization(const std::string& name);

struct IndexParams;
// Dims an int8 code covers: the prefix the graph is built on, else all of them.
std::size_t code_dims(const IndexParams& params);
const char* quantization_name(Quantization quantization);

struct IndexParams {
  std::size_t dim = 0;
  Metric metric = Metric::cosine;
  std::uint32_t M = 16;
  std::uint32_t ef_construction = 200;
  std::uint64_t seed = 0;
  std::size_t prefix_dim = 0;     // graph built on the first prefix_dim dims; 0 = full
  bool require_unit_norm = true;  // metric "ip": reject rows whose norm is not 1 +- 1e-3
  Quantization quantization = Quantization::none;
  quant::Int8Mode int8_mode = quant::Int8Mode::per_vector;
  bool build_on_codes = true;  // int8: the insert's beam search runs on codes too
};

// How a filtered search finds its results: the cost model's choice, or forced.
enum class FilterPath : std::uint8_t { automatic = 0, graph = 1, brute_force = 2 };

// Per-call options of a search.
struct SearchOptions {
  std::size_t k = 10;
  std::size_t ef = 0;          // 0: the index's ef
  std::size_t prefix_dim = 0;  // 0: the index's prefix_dim; == dim: full-width traversal
  std::size_t rerank = 0;      // 0: the default (default_rerank)
  std::size_t num_threads = 0;
  // Only ids in the set are returned: `filter` for every query, or `filters[i]` for query i
  // (null entries: no filter). Sets must outlive the call.
  const IdSet* filter = nullptr;
  const IdSet* const* filters = nullptr;
  // hnswlib's form: called with the id of each candidate the search meets (every query,
  // after `filter`); slow, since it calls back into the caller. May throw.
  const std::function<bool(std::int64_t)>* accept_id = nullptr;
  FilterPath filter_path = FilterPath::automatic;
};

// How compact() rebuilds links: repair the rows that lost neighbours, insert the survivors
// afresh, or choose by the share of nodes removed.
enum class CompactMode : std::uint8_t { automatic = 0, repair = 1, rebuild = 2 };

// What each query of a search did (optional outputs, one entry per query).
struct SearchStats {
  std::uint8_t* brute_force = nullptr;  // 1: exact scan of the allowed ids, 0: graph traversal
  std::uint64_t* distances = nullptr;   // distances computed (traversal, rerank and scan)
};

class Index {
 public:
  explicit Index(const IndexParams& params);

  const IndexParams& params() const { return params_; }
  std::size_t dim() const { return params_.dim; }
  std::size_t size() const;
  std::size_t node_count() const;
  std::size_t capacity() const;
  std::size_t ef() const { return ef_.load(); }
  void set_ef(std::size_t ef);
  const char* simd_level() const { return kernels_.name; }
  std::size_t memory_bytes() const;
  bool quantized() const { return params_.quantization != Quantization::none; }
  // Candidates rescored on f32 rows when `rerank` is not given: a prefix traversal rescores
  // the whole beam (its distances are on other dims); an int8 traversal rescores
  // max(2k, 20) of it, capped at ef.
  static std::size_t default_rerank(bool prefix, std::size_t k, std::size_t ef);

  // Adds n rows (row-major, dim floats each). `ids` may be null (continue after the largest id).
  // Everything is validated before anything changes. `interrupted` is polled between chunks;
  // when it returns true the add stops after a consistent chunk and returns false.
  bool add(const float* rows, std::size_t n, const std::int64_t* ids, std::size_t num_threads,
           bool replace, const std::function<bool()>& interrupted,
           std::vector<std::int64_t>& assigned_ids);

  // out_ids / out_distances: n * k, padded with -1 / +inf.
  void search(const float* queries, std::size_t n, const SearchOptions& options,
              std::int64_t* out_ids, float* out_distances, const SearchStats& stats = {}) const;
  // Every live id (in `filter` when given) within `radius` of each query (the search's distance:
  // 1 - cos, or squared l2), ascending, at most `max_results` (0: no limit). Traversal: a beam
  // search of width ef, doubled until its farthest member lies outside the radius (or it
  // spans the index), so the boundary is searched with the recall of a k-NN search at that
  // width; `exact` scans every row instead. out[i] holds query i's (id, distance) pairs.
  void search_radius(const float* queries, std::size_t n, float radius, std::size_t max_results,
                     std::size_t ef, bool exact, const IdSet* filter, std::size_t num_threads,
                     std::vector<std::vector<std::pair<std::int64_t, float>>>& out) const;
  // Whether the cost model scans a filter's allowed ids instead of traversing the graph.
  bool prefers_brute_force(std::size_t allowed, std::size_t ef) const;
  // One past the largest id ever added: a boolean filter mask needs this many entries.
  std::uint64_t id_bound() const;
  // The first of `ids` that is not a live id, or -1 when all are.
  std::int64_t first_missing(const std::int64_t* ids, std::size_t n) const;
  void exact_search(const float* queries, std::size_t n, std::size_t k, std::size_t num_threads,
                    std::int64_t* out_ids, float* out_distances, const IdSet* filter = nullptr,
                    const IdSet* const* filters = nullptr) const;

  // Renumbers nodes in breadth-first order of the bottom layer (ids, vectors and results are
  // unchanged): graph neighbours then sit near each other in memory.
  void reorder();

  void remove(const std::int64_t* ids, std::size_t n);
  // Drops the removed (and replaced) nodes for good: survivors are renumbered densely, links
  // that led to removed nodes are repaired (HnswGraph::repaired_links), ids stay. Searches run
  // on while the compacted copy is built and see the old graph or the new one, never a mix;
  // writers wait. Needs memory for a second copy of the survivors meanwhile. Returns the
  // number of nodes dropped. A removed id can no longer be restored afterwards.
  std::size_t compact(std::size_t num_threads, CompactMode mode = CompactMode::automatic);
  void restore(const std::int64_t* ids, std::size_t n);  // undo remove (hnswlib unmark_deleted)
  bool contains(std::int64_t id) const;
  void get(const std::int64_t* ids, std::size_t n, float* out) const;
  std::vector<std::int64_t> ids() const;
  // Id of the graph's entry point (a removed one until compaction), -1 when empty.
  std::int64_t entry_id() const;

  // Serialization (io.cpp). `metadata` is an opaque JSON string stored beside the payload.
  void save(const std::string& path, const std::string& metadata) const;
  std::string to_bytes(const std::string& metadata) const;
  // Streams the file format to `sink` (a bounded buffer beside the index; nothing else).
  void save_to(ByteSink& sink, const std::string& metadata) const;
  static std::unique_ptr<Index> load_from(ByteSource& source, std::string& metadata);
  // `mapped`: read the rows (and a v2 file's level-0 blocks) in place from a read-only file
  // mapping; such an index refuses every change (read_only()).
  static std::unique_ptr<Index> load(const std::string& path, std::string& metadata,
                                     bool mapped = false);
  bool read_only() const { return mapping_ != nullptr; }
  // The prefix whose inverse norm int8 code headers carry (0: they carry |x|^2).
  std::size_t code_norm_prefix() const {
    return params_.metric == Metric::l2 ? 0 : params_.prefix_dim;
  }
  static std::unique_ptr<Index> from_bytes(const std::string& bytes, std::string& metadata);
  static std::unique_ptr<Index> from_buffer(const unsigned char* data, std::size_t size,
                                            std::string& metadata);

  // Opaque extra payload kept with the index (the Python layer's rotation matrix).
  std::vector<float> rotation() const;
  void set_rotation(std::vector<float> rotation);

 private:
  friend class IndexSerializer;

  void validate_rows(const float* rows, std::size_t n, const char* argument) const;
  void prepare_row(const float* in, float* out) const;
  void compute_prefix_norm(NodeId node);
  // Per-thread buffers of a search, kept between calls so a search allocates nothing.
  struct QueryScratch {
    graph::SearchScratch graph;
    std::vector<float> query;
    std::vector<graph::Neighbor> candidates;
    quant::CodeQuery codes;
  };
  // Returns the distances computed; sets *brute_force when the allowed ids were scanned.
  std::size_t search_one(const float* query, const SearchOptions& options, const IdSet* filter,
                         QueryScratch& scratch, std::int64_t* out_ids, float* out_distances,
                         bool* brute_force) const;
  // Whether a live node passes `filter` and `accept_id` (either may be null).
  struct NodeFilter {
    const std::uint8_t* deleted;
    const std::int64_t* labels;
    const IdSet* filter;
    const std::function<bool(std::int64_t)>* accept_id;
    bool operator()(NodeId node) const {
      if (deleted != nullptr && deleted[node] != 0) return false;
      if (filter != nullptr && !filter->contains(labels[node])) return false;
      return accept_id == nullptr || (*accept_id)(labels[node]);
    }
  };
  NodeFilter node_filter(const IdSet* filter,
                         const std::function<bool(std::int64_t)>* accept_id) const {
    return {store_.has_deleted() ? store_.deleted_flags() : nullptr, store_.labels().data(), filter,
            accept_id};
  }
  float full_distance(const float* query, NodeId node) const;
  // Calls visit(space) with the Space that traverses this index for `query` at `width` prefix
  // dims (0 = full): f32 rows, a prefix of them, or (on_codes) int8 codes, prepared in `codes`.
  // The one place that choice is made. `rows` / `prefix_norms` replace the store's (compaction
  // builds its graph over a new store before it takes the place of the old one).
  template <class Visit>
  void with_space(const float* query, std::size_t width, bool on_codes, quant::CodeQuery& codes,
                  Visit&& visit, const float* rows = nullptr,
                  const float* prefix_norms = nullptr) const;
  void rerank_on_rows(const float* query, std::size_t count,
                      std::vector<graph::Neighbor>& candidates) const;
  // The k nearest live nodes (in `filter` when given) by brute force on full vectors,
  // ascending. Returns the distances computed.
  std::size_t exact_candidates(const float* query, std::size_t k, const IdSet* filter,
                               std::vector<graph::Neighbor>& out,
                               const std::function<bool(std::int64_t)>* accept_id = nullptr) const;

  // Lock order: writer_mutex_ (serializes writers), then turnstile_ + rw_mutex_. Readers pass
  // the turnstile before taking rw_mutex_ shared, so a waiting writer is not starved.
  std::shared_lock<std::shared_mutex> read_lock() const;
  std::unique_lock<std::shared_mutex> write_lock() const;

  IndexParams params_;
  const kernels::KernelTable& kernels_;
  VectorStore store_;
  graph::HnswGraph graph_;
  std::vector<float> prefix_inv_norms_;  // 1/|row[:prefix_dim]|, prefix cosine/ip only
  std::vector<float> rotation_;
  quant::Int8Quantizer quantizer_;
  std::atomic<std::size_t> ef_{64};

  std::shared_ptr<void> mapping_;  // the file mapping of a load with mmap, else null
  void refuse_if_read_only() const;
  mutable graph::LendingPool<QueryScratch> query_scratch_;
  mutable std::mutex writer_mutex_;
  mutable std::mutex turnstile_;
  mutable std::shared_mutex rw_mutex_;
};

}  // namespace matry
