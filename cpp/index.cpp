#include "index.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <queue>
#include <unordered_set>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "errors.hpp"
#include "kernels/dispatch.hpp"
#include "thread_pool.hpp"

namespace matry {
namespace {

constexpr float kUnitNormTolerance = 1e-3f;
constexpr std::size_t kAddChunk = 2048;  // rows inserted per write-lock hold

// Prefetch the bytes of a row that the next distance will read, several lines at once.
inline void prefetch_row(const float* row, std::size_t floats) {
  // Every cache line the row touches, including a last one it only enters partly.
  const std::uintptr_t first = reinterpret_cast<std::uintptr_t>(row) & ~std::uintptr_t{63};
  const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(row + floats);
  for (std::uintptr_t line = first; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line));
  }
}

// Spaces bind a query to the store's rows; the graph sees node ids only.
// Cosine and ip: distance = 1 - dot (rows are unit length).
struct DotSpace {
  const float* rows;
  std::size_t stride;
  kernels::PairKernel dot;
  const float* query_row;
  float query(NodeId node) const { return 1.0f - dot(query_row, rows + node * stride, stride); }
  float between(NodeId a, NodeId b) const {
    return 1.0f - dot(rows + a * stride, rows + b * stride, stride);
  }
  void prefetch(NodeId node) const { prefetch_row(rows + node * stride, stride); }
};

// l2: squared euclidean distance.
struct L2Space {
  const float* rows;
  std::size_t stride;
  kernels::PairKernel l2sq;
  const float* query_row;
  float query(NodeId node) const { return l2sq(query_row, rows + node * stride, stride); }
  float between(NodeId a, NodeId b) const {
    return l2sq(rows + a * stride, rows + b * stride, stride);
  }
  void prefetch(NodeId node) const { prefetch_row(rows + node * stride, stride); }
};

// Matryoshka traversal, cosine/ip: 1 - cos over the first `width` dims of full-stride rows,
// i.e. 1 - dot(q[:p], x[:p]) / (|q[:p]| |x[:p]|). Inverse prefix norms come from a table built
// at insert time when `width` is the index's prefix_dim, or are computed on the fly otherwise.
struct PrefixDotSpace {
  const float* rows;
  std::size_t stride;
  std::size_t width;
  kernels::PairKernel dot;
  const float* inv_norms;  // may be null
  const float* query_row;
  float query_inv_norm;
  float inv_norm(NodeId node) const {
    if (inv_norms != nullptr) return inv_norms[node];
    const float* row = rows + node * stride;
    const float squared = dot(row, row, width);
    return squared > 0.0f ? 1.0f / std::sqrt(squared) : 0.0f;
  }
  float query(NodeId node) const {
    return 1.0f - dot(query_row, rows + node * stride, width) * query_inv_norm * inv_norm(node);
  }
  float between(NodeId a, NodeId b) const {
    return 1.0f - dot(rows + a * stride, rows + b * stride, width) * inv_norm(a) * inv_norm(b);
  }
  void prefetch(NodeId node) const { prefetch_row(rows + node * stride, width); }
};

// Matryoshka traversal, l2: squared distance over the first `width` dims.
struct PrefixL2Space {
  const float* rows;
  std::size_t stride;
  std::size_t width;
  kernels::PairKernel l2sq;
  const float* query_row;
  float query(NodeId node) const { return l2sq(query_row, rows + node * stride, width); }
  float between(NodeId a, NodeId b) const {
    return l2sq(rows + a * stride, rows + b * stride, width);
  }
  void prefetch(NodeId node) const { prefetch_row(rows + node * stride, width); }
};

// Traversal on int8 codes (quant/int8.hpp) in the graph's level-0 blocks. The neighbour
// heuristic (between) stays on f32 through `Exact`, the space the codes approximate.
template <class Exact>
struct CodeSpaceBase {
  Exact exact;
  const std::uint8_t* blocks;  // level-0 block of node 0
  std::size_t block_bytes;
  std::size_t payload_offset;
  std::size_t width;  // code bytes compared: the full dim or a prefix
  kernels::CodeKernel dot_codes;
  const quant::CodeQuery* code_query;

  const std::uint8_t* payload(NodeId node) const {
    return blocks + node * block_bytes + payload_offset;
  }
  quant::CodeHeader header(NodeId node) const {
    quant::CodeHeader h;
    std::memcpy(&h, payload(node), sizeof(h));
    return h;
  }
  // q . x_hat over the first `width` dims.
  float estimated_dot(NodeId node, const quant::CodeHeader& h) const {
    const std::int32_t integer =
        dot_codes(payload(node) + sizeof(quant::CodeHeader), code_query->u.data(), width);
    return code_query->offset_dot + h.lo * code_query->sum_w +
           h.step * code_query->w_scale * static_cast<float>(integer);
  }
  float between(NodeId a, NodeId b) const { return exact.between(a, b); }
  void prefetch(NodeId node) const {
    const std::uintptr_t first =
        reinterpret_cast<std::uintptr_t>(payload(node)) & ~std::uintptr_t{63};
    const std::uintptr_t end =
        reinterpret_cast<std::uintptr_t>(payload(node)) + sizeof(quant::CodeHeader) + width;
    for (std::uintptr_t line = first; line < end; line += 64) {
      __builtin_prefetch(reinterpret_cast<const void*>(line));
    }
  }
};

// Cosine and ip on codes, full width: 1 - q . x_hat (rows and query are unit length).
struct CodeDotSpace : CodeSpaceBase<DotSpace> {
  float query(NodeId node) const { return 1.0f - estimated_dot(node, header(node)); }
};

// Cosine and ip on the codes of a prefix: 1 - cos over the first `width` dims, with the exact
// prefix norm of the row: from the code header for the index's own prefix (no second cache
// miss), else computed from the row.
struct CodePrefixDotSpace : CodeSpaceBase<PrefixDotSpace> {
  bool norm_in_header;
  float query(NodeId node) const {
    const quant::CodeHeader h = header(node);
    const float inv_norm = norm_in_header ? h.norm : exact.inv_norm(node);
    return 1.0f - estimated_dot(node, h) * exact.query_inv_norm * inv_norm;
  }
};

// l2 on codes: |x|^2 - 2 q . x_hat + |q|^2 with the row's exact |x|^2.
struct CodeL2Space : CodeSpaceBase<L2Space> {
  float query(NodeId node) const {
    const quant::CodeHeader h = header(node);
    return h.norm - 2.0f * estimated_dot(node, h) + code_query->squared_norm;
  }
};

float inverse_norm(const kernels::KernelTable& kernels, const float* row, std::size_t n) {
  const float squared = kernels.dot(row, row, n);
  return squared > 0.0f ? 1.0f / std::sqrt(squared) : 0.0f;
}

}  // namespace

Metric parse_metric(const std::string& name) {
  if (name == "cosine") return Metric::cosine;
  if (name == "ip") return Metric::ip;
  if (name == "l2") return Metric::l2;
  throw InvalidArgument("metric: expected 'cosine', 'ip' or 'l2', got '" + name + "'");
}

std::size_t code_dims(const IndexParams& params) {
  return params.prefix_dim != 0 ? params.prefix_dim : params.dim;
}

Quantization parse_quantization(const std::string& name) {
  if (name.empty() || name == "none") return Quantization::none;
  if (name == "int8") return Quantization::int8;
  throw InvalidArgument("quantization: expected None or 'int8', got '" + name + "'");
}

const char* quantization_name(Quantization quantization) {
  return quantization == Quantization::int8 ? "int8" : "none";
}

const char* metric_name(Metric metric) {
  switch (metric) {
    case Metric::cosine:
      return "cosine";
    case Metric::ip:
      return "ip";
    case Metric::l2:
      return "l2";
  }
  return "unknown";
}

static IndexParams checked(IndexParams params) {
  if (params.dim < 1 || params.dim > (1u << 16)) {
    throw InvalidArgument("dim: must be between 1 and 65536, got " + std::to_string(params.dim));
  }
  if (params.M < 2 || params.M > graph::kMaxM) {
    throw InvalidArgument("M: must be between 2 and " + std::to_string(graph::kMaxM) + ", got " +
                          std::to_string(params.M));
  }
  if (params.ef_construction < 1) throw InvalidArgument("ef_construction: must be >= 1");
  if (params.prefix_dim > params.dim) {
    throw InvalidArgument("prefix_dim: must be between 1 and dim (" + std::to_string(params.dim) +
                          "), got " + std::to_string(params.prefix_dim));
  }
  if (params.prefix_dim == params.dim) params.prefix_dim = 0;  // full width: the plain path
  if (params.quantization != Quantization::none && params.prefix_dim != 0 &&
      params.metric == Metric::l2) {
    throw InvalidArgument(
        "prefix_dim: a Matryoshka prefix on int8 codes needs metric 'cosine' or 'ip' (prefix "
        "l2 is supported on f32 rows: quantization=None)");
  }
  return params;
}

Index::Index(const IndexParams& params)
    : params_(checked(params)),
      kernels_(kernels::active_kernels()),
      store_(params_.dim),
      graph_(params_.M, params_.ef_construction,
             params_.quantization == Quantization::int8
                 ? quant::Int8Quantizer(code_dims(params_), params_.int8_mode).payload_bytes()
                 : 0),
      quantizer_(code_dims(params_), params_.int8_mode) {}

std::size_t Index::default_rerank(bool prefix, std::size_t k, std::size_t ef) {
  // Measured (bench/results/quantization): code error alone needs at most 15 rescored
  // candidates for recall@10 0.99, and on MiniLM and GloVe graphs 20 rescore as well as the
  // whole beam; each rescore reads a full f32 row, so rescoring more only costs.
  constexpr std::size_t kInt8RerankFactor = 2;
  constexpr std::size_t kInt8RerankMinimum = 20;
  if (prefix) return ef;
  return std::min(ef, std::max(kInt8RerankFactor * k, kInt8RerankMinimum));
}

std::shared_lock<std::shared_mutex> Index::read_lock() const {
  {
    std::lock_guard<std::mutex> pass(turnstile_);
  }
  return std::shared_lock<std::shared_mutex>(rw_mutex_);
}

std::unique_lock<std::shared_mutex> Index::write_lock() const {
  std::lock_guard<std::mutex> hold(turnstile_);
  return std::unique_lock<std::shared_mutex>(rw_mutex_);
}

std::size_t Index::size() const {
  auto lock = read_lock();
  return store_.live_count();
}

std::size_t Index::node_count() const {
  auto lock = read_lock();
  return store_.node_count();
}

std::size_t Index::capacity() const {
  auto lock = read_lock();
  return store_.capacity();
}

std::size_t Index::memory_bytes() const {
  auto lock = read_lock();
  return store_.memory_bytes() + graph_.memory_bytes() +
         prefix_inv_norms_.capacity() * sizeof(float);
}

void Index::set_ef(std::size_t ef) {
  if (ef < 1) throw InvalidArgument("ef: must be >= 1");
  ef_ = ef;
}

void Index::refuse_if_read_only() const {
  if (read_only()) {
    throw InvalidArgument(
        "index: loaded with mmap=True, so it is read-only; Index.load(path) without mmap gives "
        "a copy that can change");
  }
}

std::vector<float> Index::rotation() const {
  auto lock = read_lock();
  return rotation_;
}

void Index::set_rotation(std::vector<float> rotation) {
  refuse_if_read_only();
  if (!rotation.empty() && rotation.size() != params_.dim * params_.dim) {
    throw InvalidArgument("rotation: must be a dim x dim matrix");
  }
  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = write_lock();
  rotation_ = std::move(rotation);
}

void Index::validate_rows(const float* rows, std::size_t n, const char* argument) const {
  const std::size_t dim = params_.dim;
  for (std::size_t i = 0; i < n; ++i) {
    const float* row = rows + i * dim;
    double squared = 0.0;
    for (std::size_t j = 0; j < dim; ++j) {
      if (!std::isfinite(row[j])) {
        throw InvalidArgument(std::string(argument) + ": row " + std::to_string(i) +
                              " contains NaN or inf");
      }
      squared += static_cast<double>(row[j]) * row[j];
    }
    if (params_.metric == Metric::cosine && squared == 0.0) {
      throw InvalidArgument(std::string(argument) + ": row " + std::to_string(i) +
                            " is all zeros and has no direction (metric='cosine')");
    }
    if (params_.metric == Metric::ip && params_.require_unit_norm &&
        std::fabs(std::sqrt(squared) - 1.0) > kUnitNormTolerance) {
      throw InvalidArgument(std::string(argument) + ": row " + std::to_string(i) + " has norm " +
                            std::to_string(std::sqrt(squared)) +
                            "; metric='ip' needs unit-length vectors (within 1e-3). Normalize "
                            "them, or use metric='cosine' which normalizes for you");
    }
  }
}

void Index::prepare_row(const float* in, float* out) const {
  const std::size_t dim = params_.dim;
  if (params_.metric != Metric::cosine) {
    std::copy(in, in + dim, out);
    return;
  }
  double squared = 0.0;
  for (std::size_t j = 0; j < dim; ++j) squared += static_cast<double>(in[j]) * in[j];
  const double scale = squared > 0.0 ? 1.0 / std::sqrt(squared) : 0.0;
  for (std::size_t j = 0; j < dim; ++j) out[j] = static_cast<float>(in[j] * scale);
}

void Index::compute_prefix_norm(NodeId node) {
  if (params_.prefix_dim == 0 || params_.metric == Metric::l2) return;
  prefix_inv_norms_[node] = inverse_norm(kernels_, store_.row(node), params_.prefix_dim);
}

template <class Visit>
void Index::with_space(const float* query, std::size_t width, bool on_codes,
                       quant::CodeQuery& codes, Visit&& visit, const float* rows,
                       const float* prefix_norms) const {
  if (rows == nullptr) rows = store_.rows();
  if (prefix_norms == nullptr) prefix_norms = prefix_inv_norms_.data();
  const std::size_t dim = params_.dim;
  const bool l2 = params_.metric == Metric::l2;
  if (width == 0 || width >= dim) width = 0;
  const float* table = width != 0 && width == params_.prefix_dim ? prefix_norms : nullptr;
  const float query_inv_norm = width != 0 && !l2 ? inverse_norm(kernels_, query, width) : 1.0f;

  // Codes cover the first code_dims dims (all of them, or the index's prefix): a traversal
  // wider than that runs on the f32 rows, and so does a prefix l2 one (its code header holds
  // the full |x|^2, not the prefix's).
  const std::size_t coded = code_dims(params_);
  if (on_codes && (width == 0 ? coded == dim : width <= coded && !l2)) {
    quantizer_.prepare_query(query, width == 0 ? dim : width, codes);
    const auto code_space = [&](auto exact) {
      using Exact = decltype(exact);
      return CodeSpaceBase<Exact>{exact,
                                  graph_.blocks(),
                                  graph_.level0_stride() * sizeof(std::uint32_t),
                                  graph_.payload_offset(),
                                  width == 0 ? dim : width,
                                  kernels_.dot_u8s8,
                                  &codes};
    };
    if (l2) {
      visit(CodeL2Space{code_space(L2Space{rows, dim, kernels_.l2sq, query})});
    } else if (width == 0) {
      visit(CodeDotSpace{code_space(DotSpace{rows, dim, kernels_.dot, query})});
    } else {
      visit(CodePrefixDotSpace{
          code_space(PrefixDotSpace{rows, dim, width, kernels_.dot, table, query, query_inv_norm}),
          width == code_norm_prefix()});
    }
    return;
  }
  if (width == 0) {
    if (l2) {
      visit(L2Space{rows, dim, kernels_.l2sq, query});
    } else {
      visit(DotSpace{rows, dim, kernels_.dot, query});
    }
  } else if (l2) {
    visit(PrefixL2Space{rows, dim, width, kernels_.l2sq, query});
  } else {
    visit(PrefixDotSpace{rows, dim, width, kernels_.dot, table, query, query_inv_norm});
  }
}

void Index::rerank_on_rows(const float* query, std::size_t count,
                           std::vector<graph::Neighbor>& candidates) const {
  if (candidates.size() > count) candidates.resize(count);
  // The traversal did not read these rows (codes or a prefix): start loading them a few
  // candidates ahead, so the misses overlap instead of stalling row by row.
  constexpr std::size_t kRerankLookahead = 4;
  const std::size_t dim = params_.dim;
  const std::size_t total = candidates.size();
  for (std::size_t i = 0; i < std::min(kRerankLookahead, total); ++i) {
    prefetch_row(store_.row(candidates[i].node), dim);
  }
  for (std::size_t i = 0; i < total; ++i) {
    if (i + kRerankLookahead < total) {
      prefetch_row(store_.row(candidates[i + kRerankLookahead].node), dim);
    }
    candidates[i].distance = full_distance(query, candidates[i].node);
  }
  std::sort(candidates.begin(), candidates.end(), graph::closer);
}

bool Index::add(const float* rows, std::size_t n, const std::int64_t* ids, std::size_t num_threads,
                bool replace, const std::function<bool()>& interrupted,
                std::vector<std::int64_t>& assigned_ids) {
  refuse_if_read_only();
  if (n == 0) throw InvalidArgument("vectors: empty batch (0 rows)");
  std::lock_guard<std::mutex> writer(writer_mutex_);  // one writer at a time
  validate_rows(rows, n, "vectors");

  // Ids: validated in full before anything changes.
  assigned_ids.resize(n);
  if (ids == nullptr) {
    // Default ids continue after the largest id used so far and must stay <= 2^63 - 1.
    const std::uint64_t first = store_.next_label();
    if (n > kLabelCount - first) {
      throw InvalidArgument("ids: no room for " + std::to_string(n) +
                            " default ids: they continue after the largest id used so far (" +
                            std::to_string(first - 1) +
                            ") and would pass 2^63 - 1, the largest id; pass explicit ids");
    }
    for (std::size_t i = 0; i < n; ++i) assigned_ids[i] = static_cast<std::int64_t>(first + i);
  } else {
    std::unordered_set<std::int64_t> seen;
    seen.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t id = ids[i];
      if (id < 0) {
        throw InvalidArgument("ids: must be non-negative, got " + std::to_string(id) +
                              " at position " + std::to_string(i));
      }
      if (!seen.insert(id).second) {
        throw InvalidArgument("ids: duplicate id " + std::to_string(id) + " at position " +
                              std::to_string(i));
      }
      if (!replace && store_.find_live(id)) {
        throw KeyNotFound("ids: id " + std::to_string(id) +
                          " is already in the index (pass replace=True to overwrite it)");
      }
      assigned_ids[i] = id;
    }
  }
  if (store_.node_count() + n > graph::kMaxNodes) {
    throw InvalidArgument("vectors: the index cannot hold more than 2^30 - 1 vectors");
  }

  {
    auto lock = write_lock();
    const std::size_t needed = store_.node_count() + n;
    if (needed > store_.capacity()) {
      // Geometric growth for many small batches; exactly what is needed for one big batch.
      const std::size_t grown = std::max(needed, store_.capacity() + store_.capacity() / 2);
      store_.reserve(grown);
      graph_.reserve(grown);
      if (params_.prefix_dim != 0 && params_.metric != Metric::l2) {
        prefix_inv_norms_.reserve(grown);
      }
#if defined(__GLIBC__)
      // Vectors and links grow in place (mremap, buffer.hpp); the per-node std::vectors
      // (labels, flags, levels, prefix norms) still reallocate, and glibc keeps what they free
      // (its mmap threshold rises after a free). Hand whole free pages back.
      malloc_trim(0);
#endif
    }
  }

  std::vector<float> prepared(kAddChunk * params_.dim);
  if (quantized() && !quantizer_.trained()) {
    // The first batch fits the quantizer (its mean, or per-dim ranges); later batches are
    // encoded with it.
    auto lock = write_lock();
    for (std::size_t i = 0; i < n; ++i) {
      prepare_row(rows + i * params_.dim, prepared.data());
      quantizer_.observe(prepared.data());
    }
    quantizer_.finish_training();
  }
  const bool insert_on_codes = quantized() && params_.build_on_codes;
  std::vector<quant::CodeQuery> insert_queries(resolve_threads(num_threads, kAddChunk));
  for (std::size_t begin = 0; begin < n; begin += kAddChunk) {
    if (begin > 0 && interrupted && interrupted()) return false;
    const std::size_t end = std::min(n, begin + kAddChunk);
    auto lock = write_lock();
    const NodeId first_node = static_cast<NodeId>(store_.node_count());
    for (std::size_t i = begin; i < end; ++i) {
      const std::int64_t id = assigned_ids[i];
      if (const std::optional<NodeId> old = store_.find(id)) store_.mark_deleted(*old);
      float* buffer = prepared.data() + (i - begin) * params_.dim;
      prepare_row(rows + i * params_.dim, buffer);
      const NodeId node = store_.append(buffer, id);
      graph_.append_node(graph_.draw_level(params_.seed, node));
      if (quantized()) {
        std::uint8_t* payload = graph_.payload(node);
        quant::CodeHeader header;
        quantizer_.encode(buffer, code_norm_prefix(), header, payload + sizeof(header));
        std::memcpy(payload, &header, sizeof(header));
      }
      if (params_.prefix_dim != 0 && params_.metric != Metric::l2) {
        prefix_inv_norms_.push_back(0.0f);
        compute_prefix_norm(node);
      }
    }
    const std::size_t count = end - begin;
    parallel_for(count, num_threads, [&](std::size_t i, std::size_t worker) {
      const NodeId node = first_node + static_cast<NodeId>(i);
      with_space(store_.row(node), params_.prefix_dim, insert_on_codes, insert_queries[worker],
                 [&](const auto& space) { graph_.insert(node, space); });
    });
  }
  return true;
}

float Index::full_distance(const float* query, NodeId node) const {
  const float* row = store_.row(node);
  if (params_.metric == Metric::l2) return kernels_.l2sq(query, row, params_.dim);
  return 1.0f - kernels_.dot(query, row, params_.dim);
}

std::uint64_t Index::id_bound() const {
  auto lock = read_lock();
  return store_.next_label();
}

std::int64_t Index::first_missing(const std::int64_t* ids, std::size_t n) const {
  auto lock = read_lock();
  for (std::size_t i = 0; i < n; ++i) {
    if (!store_.find_live(ids[i])) return static_cast<std::int64_t>(i);
  }
  return -1;
}

bool Index::prefers_brute_force(std::size_t allowed, std::size_t ef) const {
  // Measured on glove-50 and MiniLM (bench/filter.py): an unfiltered search computes about
  // kDistancesPerEf * ef distances, and a filter that admits a fraction f of the nodes needs
  // about 1/f times as many (the beam must collect ef admitted nodes). A scan computes one
  // distance per allowed id, each a random row read, about as costly as a traversal's.
  constexpr double kDistancesPerEf = 12.0;
  const std::size_t live = std::max<std::size_t>(store_.live_count(), 1);
  const double fraction = std::min(1.0, static_cast<double>(allowed) / static_cast<double>(live));
  if (fraction <= 0.0) return true;
  const double traversal = kDistancesPerEf * static_cast<double>(ef) / fraction;
  return static_cast<double>(allowed) <= traversal;
}

std::size_t Index::search_one(const float* raw_query, const SearchOptions& options,
                              const IdSet* filter, QueryScratch& scratch, std::int64_t* out_ids,
                              float* out_distances, bool* brute_force) const {
  const std::size_t dim = params_.dim;
  const std::size_t k = options.k;
  std::fill(out_ids, out_ids + k, -1);
  std::fill(out_distances, out_distances + k, std::numeric_limits<float>::infinity());
  *brute_force = false;
  if (store_.live_count() == 0 || (filter != nullptr && filter->size() == 0)) return 0;
  const std::function<bool(std::int64_t)>* accept_id = options.accept_id;

  scratch.query.resize(dim);
  prepare_row(raw_query, scratch.query.data());
  const float* query = scratch.query.data();
  graph::SearchScratch& graph_scratch = scratch.graph;
  std::vector<graph::Neighbor>& candidates = scratch.candidates;
  const std::uint8_t* deleted = store_.has_deleted() ? store_.deleted_flags() : nullptr;

  std::size_t width = options.prefix_dim != 0 ? options.prefix_dim : params_.prefix_dim;
  if (width >= dim) width = 0;
  // A beam wider than the index holds nothing more than one as wide as it: cap ef there (the
  // pool's memory and the cost of a search then stay bounded by the index, whatever ef says).
  const std::size_t ef =
      std::min(std::max({options.ef != 0 ? options.ef : ef_.load(), k, options.rerank}),
               std::max(k, store_.node_count()));

  std::size_t distances = 0;
  bool scan = false;
  const bool filtered = filter != nullptr || accept_id != nullptr;
  if (filtered) {
    // A callback's selectivity is unknown: it traverses unless told to scan.
    scan = options.filter_path == FilterPath::brute_force ||
           (options.filter_path == FilterPath::automatic && filter != nullptr &&
            prefers_brute_force(filter->size(), ef));
  }
  if (!scan) {
    with_space(query, width, quantized(), scratch.codes, [&](const auto& space) {
      if (!filtered) {
        distances = graph_.search(
            space, ef, [deleted](NodeId n) { return deleted == nullptr || deleted[n] == 0; },
            graph_scratch, candidates);
      } else {
        distances = graph_.search_filtered(space, ef, node_filter(filter, accept_id), graph_scratch,
                                           candidates);
      }
    });
    if (width != 0 || quantized()) {
      // Distances of a prefix or of codes only rank the beam: rescore its best on full rows.
      const std::size_t rescored =
          options.rerank != 0 ? options.rerank : default_rerank(width != 0, k, ef);
      distances += std::min(rescored, candidates.size());
      rerank_on_rows(query, rescored, candidates);
    }
    // A traversal that found fewer than k admitted nodes may have missed some (a filter whose
    // ids the beam could not reach): the scan below is exact whatever the filter.
    scan = filtered && options.filter_path == FilterPath::automatic &&
           candidates.size() < (filter != nullptr ? std::min(k, filter->size()) : k);
  }
  if (scan) {
    distances += exact_candidates(query, k, filter, candidates, accept_id);
    *brute_force = true;
  }
  const std::size_t found = std::min(k, candidates.size());
  for (std::size_t i = 0; i < found; ++i) {
    out_ids[i] = store_.label(candidates[i].node);
    out_distances[i] = candidates[i].distance;
  }
  return distances;
}

void Index::search(const float* queries, std::size_t n, const SearchOptions& options,
                   std::int64_t* out_ids, float* out_distances, const SearchStats& stats) const {
  if (options.k < 1) throw InvalidArgument("k: must be >= 1, got " + std::to_string(options.k));
  if (options.prefix_dim > params_.dim) {
    throw InvalidArgument("prefix_dim: must be between 1 and dim (" + std::to_string(params_.dim) +
                          "), got " + std::to_string(options.prefix_dim));
  }
  if (options.rerank != 0 && options.rerank < options.k) {
    throw InvalidArgument("rerank: must be >= k (" + std::to_string(options.k) + "), got " +
                          std::to_string(options.rerank));
  }
  validate_rows(queries, n, "queries");
  auto lock = read_lock();
  const std::size_t k = options.k;
  const auto run = [&](std::size_t i, QueryScratch& scratch) {
    const IdSet* filter = options.filters != nullptr ? options.filters[i] : options.filter;
    bool brute_force = false;
    const std::size_t distances = search_one(queries + i * params_.dim, options, filter, scratch,
                                             out_ids + i * k, out_distances + i * k, &brute_force);
    if (stats.brute_force != nullptr) stats.brute_force[i] = brute_force ? 1 : 0;
    if (stats.distances != nullptr) stats.distances[i] = distances;
  };
  const std::size_t threads = resolve_threads(options.num_threads, n);
  if (threads == 1) {
    // One query per call (or one thread): no pool, no std::function, scratch reused.
    auto scratch = query_scratch_.borrow();
    for (std::size_t i = 0; i < n; ++i) run(i, *scratch);
    return;
  }
  std::vector<graph::LendingPool<QueryScratch>::Lease> scratch;
  scratch.reserve(threads);
  for (std::size_t t = 0; t < threads; ++t) scratch.push_back(query_scratch_.borrow());
  parallel_for(n, threads, [&](std::size_t i, std::size_t worker) { run(i, *scratch[worker]); });
}

void Index::search_radius(const float* queries, std::size_t n, float radius,
                          std::size_t max_results, std::size_t ef, bool exact, const IdSet* filter,
                          std::size_t num_threads,
                          std::vector<std::vector<std::pair<std::int64_t, float>>>& out) const {
  if (!std::isfinite(radius)) throw InvalidArgument("radius: must be a finite number");
  validate_rows(queries, n, "queries");
  auto lock = read_lock();
  out.assign(n, {});
  const std::size_t nodes = store_.node_count();
  const std::size_t limit = max_results == 0 ? nodes : max_results;
  // The first beam: what a plain search would use, at least 16.
  constexpr std::size_t kMinimumBeam = 16;
  const std::size_t first_beam = std::max(ef != 0 ? ef : ef_.load(), kMinimumBeam);
  const std::size_t threads = resolve_threads(num_threads, n);
  std::vector<graph::LendingPool<QueryScratch>::Lease> scratch;
  for (std::size_t t = 0; t < threads; ++t) scratch.push_back(query_scratch_.borrow());
  parallel_for(n, threads, [&](std::size_t i, std::size_t worker) {
    QueryScratch& s = *scratch[worker];
    s.query.resize(params_.dim);
    prepare_row(queries + i * params_.dim, s.query.data());
    const float* query = s.query.data();
    std::vector<graph::Neighbor>& candidates = s.candidates;
    candidates.clear();
    if (store_.live_count() > 0) {
      if (exact) {
        exact_candidates(query, nodes, filter, candidates);
      } else {
        const NodeFilter accepts = node_filter(filter, nullptr);
        // The stopping rule needs the beam ranked by the radius's own distance: a prefix
        // index traverses at full width here (its graph serves that too); int8 codes rank
        // closely enough, and the beam is rescored on the rows.
        for (std::size_t beam = std::min(first_beam, nodes);; beam = std::min(2 * beam, nodes)) {
          with_space(query, 0, quantized(), s.codes, [&](const auto& space) {
            graph_.search(space, beam, accepts, s.graph, candidates);
          });
          // Codes or a prefix only ranked the beam: the radius is on full vectors.
          if (quantized()) rerank_on_rows(query, candidates.size(), candidates);
          // Widen only while the whole beam lies inside the radius: then more may lie beyond.
          const bool all_inside = !candidates.empty() && candidates.back().distance <= radius;
          if (!all_inside || candidates.size() < beam || beam >= nodes) break;
          if (candidates.size() >= limit) break;
        }
      }
    }
    std::vector<std::pair<std::int64_t, float>>& found = out[i];
    for (const graph::Neighbor& candidate : candidates) {
      if (candidate.distance > radius || found.size() >= limit) break;
      found.emplace_back(store_.label(candidate.node), candidate.distance);
    }
  });
}

std::size_t Index::exact_candidates(const float* query, std::size_t k, const IdSet* filter,
                                    std::vector<graph::Neighbor>& out,
                                    const std::function<bool(std::int64_t)>* accept_id) const {
  // Max-heap of the k best so far.
  std::priority_queue<std::pair<float, NodeId>> best;
  std::size_t distances = 0;
  const auto consider = [&](NodeId node) {
    const float distance = full_distance(query, node);
    ++distances;
    if (best.size() < k) {
      best.emplace(distance, node);
    } else if (distance < best.top().first) {
      best.pop();
      best.emplace(distance, node);
    }
  };
  const std::size_t nodes = store_.node_count();
  // A small set is cheaper to look up id by id; a large one to test while walking the rows.
  constexpr std::size_t kLookupBelowFraction = 8;
  if (filter != nullptr && filter->size() * kLookupBelowFraction < nodes) {
    filter->for_each([&](std::int64_t id) {
      const std::optional<NodeId> node = store_.find_live(id);
      if (node && (accept_id == nullptr || (*accept_id)(id))) consider(*node);
    });
  } else {
    const NodeFilter accepts = node_filter(filter, accept_id);
    for (NodeId node = 0; node < nodes; ++node) {
      if (accepts(node)) consider(node);
    }
  }
  out.resize(best.size());
  for (std::size_t slot = best.size(); slot-- > 0;) {
    out[slot] = {best.top().first, best.top().second};
    best.pop();
  }
  return distances;
}

void Index::exact_search(const float* queries, std::size_t n, std::size_t k,
                         std::size_t num_threads, std::int64_t* out_ids, float* out_distances,
                         const IdSet* filter, const IdSet* const* filters) const {
  if (k < 1) throw InvalidArgument("k: must be >= 1, got " + std::to_string(k));
  validate_rows(queries, n, "queries");
  auto lock = read_lock();
  const std::size_t dim = params_.dim;
  parallel_for(n, num_threads, [&](std::size_t i, std::size_t) {
    std::vector<float> query(dim);
    prepare_row(queries + i * dim, query.data());
    std::vector<graph::Neighbor> best;
    exact_candidates(query.data(), k, filters != nullptr ? filters[i] : filter, best);
    std::int64_t* ids_row = out_ids + i * k;
    float* distances_row = out_distances + i * k;
    std::fill(ids_row, ids_row + k, -1);
    std::fill(distances_row, distances_row + k, std::numeric_limits<float>::infinity());
    for (std::size_t slot = 0; slot < best.size(); ++slot) {
      ids_row[slot] = store_.label(best[slot].node);
      distances_row[slot] = best[slot].distance;
    }
  });
}

void Index::reorder() {
  refuse_if_read_only();
  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = write_lock();
  std::vector<NodeId> order = graph_.breadth_first_order();
  std::vector<NodeId> new_of(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) new_of[order[i]] = static_cast<NodeId>(i);
  // The store's invariant: of the nodes sharing a label (replaced or re-added ids), the latest
  // is the one the label names. Keep their relative order: hand their new slots out by age.
  std::unordered_map<std::int64_t, std::vector<NodeId>> shared;
  {
    std::unordered_map<std::int64_t, NodeId> first_node;
    for (NodeId node = 0; node < order.size(); ++node) {
      const auto [slot, fresh] = first_node.try_emplace(store_.label(node), node);
      if (!fresh) {
        std::vector<NodeId>& group = shared[store_.label(node)];
        if (group.empty()) group.push_back(slot->second);
        group.push_back(node);
      }
    }
  }
  for (auto& [label, group] : shared) {
    std::vector<NodeId> slots;
    for (NodeId old : group) slots.push_back(new_of[old]);
    std::sort(slots.begin(), slots.end());  // `group` is already in ascending old id
    for (std::size_t j = 0; j < group.size(); ++j) {
      order[slots[j]] = group[j];
      new_of[group[j]] = slots[j];
    }
  }
  store_.permute(order);
  graph_.permute(order, new_of);
  if (!prefix_inv_norms_.empty()) {
    std::vector<float> norms(order.size());
    for (std::size_t i = 0; i < order.size(); ++i) norms[i] = prefix_inv_norms_[order[i]];
    prefix_inv_norms_ = std::move(norms);
  }
}

void Index::remove(const std::int64_t* ids, std::size_t n) {
  refuse_if_read_only();
  std::lock_guard<std::mutex> writer(writer_mutex_);
  std::vector<NodeId> nodes(n);
  std::unordered_set<std::int64_t> seen;
  for (std::size_t i = 0; i < n; ++i) {
    if (!seen.insert(ids[i]).second) {
      throw InvalidArgument("ids: duplicate id " + std::to_string(ids[i]) + " at position " +
                            std::to_string(i));
    }
    const std::optional<NodeId> node = store_.find_live(ids[i]);
    if (!node) throw KeyNotFound("ids: id " + std::to_string(ids[i]) + " is not in the index");
    nodes[i] = *node;
  }
  auto lock = write_lock();
  for (NodeId node : nodes) store_.mark_deleted(node);
}

std::size_t Index::compact(std::size_t num_threads, CompactMode mode) {
  refuse_if_read_only();
  std::lock_guard<std::mutex> writer(writer_mutex_);
  // No write lock while building: searches keep reading the old store and graph, which only
  // writers (held off by writer_mutex_) change.
  const std::size_t nodes = store_.node_count();
  if (!store_.has_deleted()) return 0;
  constexpr NodeId kGone = std::numeric_limits<NodeId>::max();
  std::vector<NodeId> survivors;
  survivors.reserve(store_.live_count());
  std::vector<NodeId> new_of(nodes, kGone);
  for (NodeId node = 0; node < nodes; ++node) {
    if (store_.is_deleted(node)) continue;
    new_of[node] = static_cast<NodeId>(survivors.size());
    survivors.push_back(node);
  }
  auto compacted = std::make_unique<graph::HnswGraph>(params_.M, params_.ef_construction,
                                                      graph_.payload_bytes());
  compacted->reserve(survivors.size());
  for (const NodeId old : survivors) {
    const NodeId node = compacted->append_node(graph_.level_of(old));
    if (graph_.payload_bytes() > 0) {
      std::memcpy(compacted->payload(node), graph_.payload(old), graph_.payload_bytes());
    }
  }
  VectorStore store = store_.select(survivors, survivors.size());
  std::vector<float> norms;
  if (!prefix_inv_norms_.empty()) {
    norms.reserve(survivors.size());
    for (const NodeId old : survivors) norms.push_back(prefix_inv_norms_[old]);
  }
  // Measured on glove-50 (bench/results/compaction*): repaired rows search as well as a fresh
  // build with 20% and 35% of the nodes removed, at a fifth of its cost; at 50% they fall
  // short (recall -0.006 at ef 64, 0.92x the QPS at recall 0.95) and at 90% far short, while
  // re-inserting the survivors matches a fresh build. Above this share, auto rebuilds.
  constexpr double kRebuildAboveRemovedShare = 0.4;
  const bool rebuild =
      mode == CompactMode::rebuild ||
      (mode == CompactMode::automatic &&
       static_cast<double>(nodes - survivors.size()) > kRebuildAboveRemovedShare * nodes);
  if (rebuild && !survivors.empty()) {
    // The survivors inserted afresh (on f32 rows: the exact distances the codes stand for).
    const std::size_t threads = resolve_threads(num_threads, survivors.size());
    std::vector<quant::CodeQuery> unused(threads);
    parallel_for(survivors.size(), threads, [&](std::size_t i, std::size_t worker) {
      const auto node = static_cast<NodeId>(i);
      with_space(
          store.row(node), params_.prefix_dim, false, unused[worker],
          [&](const auto& space) { compacted->insert(node, space); }, store.rows(), norms.data());
    });
  } else if (!survivors.empty()) {
    const std::uint8_t* deleted = store_.deleted_flags();
    // Distances as the graph's neighbour heuristic saw them: f32 rows (a prefix of them for a
    // prefix index), over the new store, so node ids are the new ones. query() is unused.
    quant::CodeQuery unused;
    const std::size_t threads = resolve_threads(num_threads, survivors.size());
    std::vector<std::vector<graph::Neighbor>> buffers(threads);
    std::vector<std::uint8_t> repaired(survivors.size(), 0);
    with_space(
        store.row(0), params_.prefix_dim, false, unused,
        [&](const auto& space) {
          // 1. Each survivor's own rows: kept, or repaired from its neighbours' neighbours.
          parallel_for(survivors.size(), threads, [&](std::size_t i, std::size_t worker) {
            const NodeId old = survivors[i];
            std::vector<graph::Neighbor>& links = buffers[worker];
            for (int level = 0; level <= graph_.level_of(old); ++level) {
              if (graph_.repaired_links(space, deleted, old, level, links, new_of)) {
                repaired[i] = 1;
              }
              compacted->set_links(static_cast<NodeId>(i), level, links);
            }
          });
          // 2. Back links from the new neighbours of repaired nodes, as an insert adds them:
          //    nodes that lost in-links regain them (otherwise the repaired graph is sparser
          //    than a fresh build, and slower to reach).
          parallel_for(survivors.size(), threads, [&](std::size_t i, std::size_t worker) {
            if (repaired[i] == 0) return;
            const auto node = static_cast<NodeId>(i);
            std::vector<graph::Neighbor>& links = buffers[worker];
            for (int level = 0; level <= compacted->level_of(node); ++level) {
              compacted->copy_links(node, level, links);
              for (const graph::Neighbor& link : links) {
                compacted->link_back(space, link.node, node, space.between(link.node, node), level);
              }
            }
          });
        },
        store.rows(), norms.data());
    // The entry point survives, or the first survivor on the highest level takes its place.
    NodeId entry = graph_.entry_point();
    if (new_of[entry] == kGone) {
      entry = survivors[0];
      for (const NodeId old : survivors) {
        if (graph_.level_of(old) > graph_.level_of(entry)) entry = old;
      }
    }
    compacted->set_entry(new_of[entry], graph_.level_of(entry));
  }
  auto lock = write_lock();
  graph_.assign_from(std::move(*compacted));
  store_ = std::move(store);
  prefix_inv_norms_ = std::move(norms);
  return nodes - survivors.size();
}

void Index::restore(const std::int64_t* ids, std::size_t n) {
  refuse_if_read_only();
  std::lock_guard<std::mutex> writer(writer_mutex_);
  std::vector<NodeId> nodes(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::optional<NodeId> node = store_.find(ids[i]);
    if (!node || !store_.is_deleted(*node)) {
      throw KeyNotFound("ids: id " + std::to_string(ids[i]) + " is not a removed id");
    }
    nodes[i] = *node;
  }
  auto lock = write_lock();
  for (NodeId node : nodes) store_.unmark_deleted(node);
}

bool Index::contains(std::int64_t id) const {
  auto lock = read_lock();
  return store_.find_live(id).has_value();
}

void Index::get(const std::int64_t* ids, std::size_t n, float* out) const {
  auto lock = read_lock();
  std::vector<NodeId> nodes(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::optional<NodeId> node = store_.find_live(ids[i]);
    if (!node) throw KeyNotFound("ids: id " + std::to_string(ids[i]) + " is not in the index");
    nodes[i] = *node;
  }
  for (std::size_t i = 0; i < n; ++i) {
    std::copy(store_.row(nodes[i]), store_.row(nodes[i]) + params_.dim, out + i * params_.dim);
  }
}

std::int64_t Index::entry_id() const {
  auto lock = read_lock();
  if (graph_.max_level() < 0) return -1;
  return store_.label(graph_.entry_point());
}

std::vector<std::int64_t> Index::ids() const {
  auto lock = read_lock();
  std::vector<std::int64_t> live;
  live.reserve(store_.live_count());
  for (NodeId node = 0; node < store_.node_count(); ++node) {
    if (!store_.is_deleted(node)) live.push_back(store_.label(node));
  }
  std::sort(live.begin(), live.end());
  return live;
}

}  // namespace matry
