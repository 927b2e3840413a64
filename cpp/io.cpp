#include "io.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <unordered_set>
#include <vector>

#include "crc32.hpp"
#include "errors.hpp"
#include "index.hpp"

namespace matry {
namespace {

constexpr char kMagic[8] = {'M', 'A', 'T', 'R', 'Y', 'I', 'D', 'X'};
constexpr std::uint32_t kEndianTag = 0x01020304u;
constexpr std::uint32_t kHeaderBytes = 128;
constexpr std::uint32_t kFlagRequireUnitNorm = 1u;

template <class T>
void put(unsigned char* out, std::size_t offset, T value) {
  std::memcpy(out + offset, &value, sizeof(T));
}
template <class T>
T take(const unsigned char* in, std::size_t offset) {
  T value;
  std::memcpy(&value, in + offset, sizeof(T));
  return value;
}

std::array<unsigned char, kHeaderBytes> encode_header(const FileHeader& h) {
  std::array<unsigned char, kHeaderBytes> out{};
  std::memcpy(out.data(), kMagic, 8);
  put<std::uint32_t>(out.data(), 8, h.format_version);
  put<std::uint32_t>(out.data(), 12, kEndianTag);
  put<std::uint32_t>(out.data(), 16, kHeaderBytes);
  put<std::uint32_t>(out.data(), 20, h.metric);
  put<std::uint64_t>(out.data(), 24, h.dim);
  put<std::uint64_t>(out.data(), 32, h.node_count);
  put<std::uint64_t>(out.data(), 40, h.live_count);
  put<std::uint32_t>(out.data(), 48, h.M);
  put<std::uint32_t>(out.data(), 52, h.ef_construction);
  put<std::uint64_t>(out.data(), 56, h.seed);
  put<std::uint64_t>(out.data(), 64, h.ef);
  put<std::uint64_t>(out.data(), 72, h.prefix_dim);
  put<std::int64_t>(out.data(), 80, h.next_label);
  put<std::uint32_t>(out.data(), 88, h.entry_point);
  put<std::int32_t>(out.data(), 92, h.max_level);
  put<std::uint64_t>(out.data(), 96, h.metadata_bytes);
  put<std::uint64_t>(out.data(), 104, h.rotation_floats);
  put<std::uint64_t>(out.data(), 112, h.payload_bytes);
  put<std::uint32_t>(out.data(), 120, h.flags);
  put<std::uint32_t>(out.data(), 124, crc32(0, out.data(), 124));
  return out;
}

[[noreturn]] void corrupt(const std::string& what) { throw CorruptIndex(what); }

// Parses and range-checks the fixed header; `file_bytes` is the whole file's size.
FileHeader decode_header(const unsigned char* in, std::size_t file_bytes) {
  if (file_bytes < kHeaderBytes + 8) {
    corrupt("file is too short to be a matry index (" + std::to_string(file_bytes) + " bytes)");
  }
  if (std::memcmp(in, kMagic, 8) != 0) corrupt("not a matry index file (bad magic bytes)");
  FileHeader h;
  h.format_version = take<std::uint32_t>(in, 8);
  const std::uint32_t endian = take<std::uint32_t>(in, 12);
  if (endian != kEndianTag) {
    corrupt(endian == 0x04030201u ? "file was written with the other byte order"
                                  : "bad endianness tag");
  }
  if (take<std::uint32_t>(in, 124) != crc32(0, in, 124)) corrupt("header checksum mismatch");
  if (h.format_version != kFormatVersion) {
    corrupt("unsupported format version " + std::to_string(h.format_version) +
            " (this matry reads version " + std::to_string(kFormatVersion) + ")");
  }
  if (take<std::uint32_t>(in, 16) != kHeaderBytes) corrupt("bad header size");
  h.metric = take<std::uint32_t>(in, 20);
  h.dim = take<std::uint64_t>(in, 24);
  h.node_count = take<std::uint64_t>(in, 32);
  h.live_count = take<std::uint64_t>(in, 40);
  h.M = take<std::uint32_t>(in, 48);
  h.ef_construction = take<std::uint32_t>(in, 52);
  h.seed = take<std::uint64_t>(in, 56);
  h.ef = take<std::uint64_t>(in, 64);
  h.prefix_dim = take<std::uint64_t>(in, 72);
  h.next_label = take<std::int64_t>(in, 80);
  h.entry_point = take<std::uint32_t>(in, 88);
  h.max_level = take<std::int32_t>(in, 92);
  h.metadata_bytes = take<std::uint64_t>(in, 96);
  h.rotation_floats = take<std::uint64_t>(in, 104);
  h.payload_bytes = take<std::uint64_t>(in, 112);
  h.flags = take<std::uint32_t>(in, 120);

  if (h.metric > 2) corrupt("unknown metric code " + std::to_string(h.metric));
  if (h.dim < 1 || h.dim > (1u << 16)) corrupt("dim out of range");
  if (h.M < 2 || h.M > 128) corrupt("M out of range");
  if (h.ef_construction < 1 || h.ef < 1 || h.ef > (1u << 30)) corrupt("ef out of range");
  if (h.prefix_dim >= h.dim && h.prefix_dim != 0) corrupt("prefix_dim out of range");
  if (h.node_count > graph::kMaxNodes) corrupt("node count out of range");
  if (h.live_count > h.node_count) corrupt("live count exceeds node count");
  if (h.next_label < 0) corrupt("next id is negative");
  if (h.max_level < -1 || h.max_level >= graph::kMaxLevel) corrupt("max level out of range");
  if ((h.node_count == 0) != (h.max_level == -1)) corrupt("max level does not match node count");
  if (h.node_count > 0 && h.entry_point >= h.node_count) corrupt("entry point out of range");
  if (h.rotation_floats != 0 && h.rotation_floats != h.dim * h.dim) {
    corrupt("rotation size does not match dim");
  }
  const std::uint64_t limit = file_bytes;
  if (h.metadata_bytes > limit || h.payload_bytes > limit ||
      kHeaderBytes + h.metadata_bytes + 4 + h.payload_bytes + 4 != file_bytes) {
    corrupt("file size does not match its header (truncated or trailing bytes)");
  }
  return h;
}

std::uint64_t fixed_payload_bytes(const FileHeader& h) {
  const std::uint64_t n = h.node_count;
  return n * h.dim * 4 + n * 8 + n + n + n * (1 + 2ull * h.M) * 4 + h.rotation_floats * 4;
}

// Writes bytes to a FILE* or a string while keeping a running CRC.
class Writer {
 public:
  explicit Writer(std::FILE* file) : file_(file) {}
  explicit Writer(std::string* text) : text_(text) {}
  void write(const void* data, std::size_t bytes) {
    if (bytes == 0) return;
    crc_ = crc32(crc_, data, bytes);
    if (text_ != nullptr) {
      text_->append(static_cast<const char*>(data), bytes);
    } else if (std::fwrite(data, 1, bytes, file_) != bytes) {
      throw IoError("write failed (disk full?)");
    }
  }
  void write_crc() {
    const std::uint32_t value = crc_;
    write(&value, 4);
  }
  std::uint32_t crc() const { return crc_; }

 private:
  std::FILE* file_ = nullptr;
  std::string* text_ = nullptr;
  std::uint32_t crc_ = 0;
};

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError("cannot open '" + path + "' for reading");
  const std::streamsize size = in.tellg();
  if (size < 0) throw IoError("cannot read '" + path + "'");
  std::string bytes(static_cast<std::size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) throw IoError("cannot read '" + path + "'");
  return bytes;
}

}  // namespace

class IndexSerializer {
 public:
  static void write(const Index& index, const std::string& metadata, Writer& out) {
    const VectorStore& store = index.store_;
    const graph::HnswGraph& graph = index.graph_;
    const std::size_t nodes = store.node_count();
    FileHeader h;
    h.metric = static_cast<std::uint32_t>(index.params_.metric);
    h.dim = index.params_.dim;
    h.node_count = nodes;
    h.live_count = store.live_count();
    h.M = index.params_.M;
    h.ef_construction = index.params_.ef_construction;
    h.seed = index.params_.seed;
    h.ef = index.ef();
    h.prefix_dim = index.params_.prefix_dim;
    h.next_label = store.next_label();
    h.entry_point = graph.entry_point();
    h.max_level = graph.max_level();
    h.metadata_bytes = metadata.size();
    h.rotation_floats = index.rotation_.size();
    h.flags = index.params_.require_unit_norm ? kFlagRequireUnitNorm : 0u;
    std::uint64_t upper_words = 0;
    for (NodeId node = 0; node < nodes; ++node) {
      upper_words += static_cast<std::uint64_t>(graph.level_of(node)) * graph.upper_stride();
    }
    h.payload_bytes = fixed_payload_bytes(h) + upper_words * 4;

    const auto header = encode_header(h);
    out.write(header.data(), header.size());
    out.write(metadata.data(), metadata.size());
    const std::uint32_t metadata_crc = crc32(0, metadata.data(), metadata.size());
    out.write(&metadata_crc, 4);
    out.write(store.rows(), nodes * h.dim * sizeof(float));
    out.write(store.labels().data(), nodes * sizeof(std::int64_t));
    out.write(store.deleted_flags(), nodes);
    std::vector<std::uint8_t> levels(nodes);
    for (NodeId node = 0; node < nodes; ++node) {
      levels[node] = static_cast<std::uint8_t>(graph.level_of(node));
    }
    out.write(levels.data(), nodes);
    if (nodes > 0) out.write(graph.level0_row(0), nodes * graph.level0_stride() * 4);
    for (NodeId node = 0; node < nodes; ++node) {
      const int level = graph.level_of(node);
      if (level > 0) out.write(graph.upper_rows(node), level * graph.upper_stride() * 4);
    }
    out.write(index.rotation_.data(), index.rotation_.size() * sizeof(float));
    out.write_crc();
  }

  static std::unique_ptr<Index> read(const std::string& bytes, std::string& metadata) {
    const auto* in = reinterpret_cast<const unsigned char*>(bytes.data());
    const FileHeader h = decode_header(in, bytes.size());
    const std::size_t body_end = bytes.size() - 4;
    if (take<std::uint32_t>(in, body_end) != crc32(0, in, body_end)) {
      corrupt("checksum mismatch (the file is corrupted)");
    }
    std::size_t offset = kHeaderBytes;
    metadata.assign(bytes.data() + offset, h.metadata_bytes);
    offset += h.metadata_bytes;
    if (take<std::uint32_t>(in, offset) != crc32(0, metadata.data(), metadata.size())) {
      corrupt("metadata checksum mismatch");
    }
    offset += 4;
    if (fixed_payload_bytes(h) > h.payload_bytes) corrupt("payload is shorter than its counts");

    IndexParams params;
    params.dim = h.dim;
    params.metric = static_cast<Metric>(h.metric);
    params.M = h.M;
    params.ef_construction = h.ef_construction;
    params.seed = h.seed;
    params.prefix_dim = h.prefix_dim;
    params.require_unit_norm = (h.flags & kFlagRequireUnitNorm) != 0;
    auto index = std::make_unique<Index>(params);
    index->ef_ = h.ef;
    const std::size_t nodes = h.node_count;
    const std::size_t dim = h.dim;

    float* rows = index->store_.reserve_rows_for_restore(nodes);
    std::memcpy(rows, in + offset, nodes * dim * sizeof(float));
    offset += nodes * dim * sizeof(float);
    for (std::size_t i = 0; i < nodes * dim; ++i) {
      if (!std::isfinite(rows[i])) corrupt("stored vector contains NaN or inf");
    }
    std::vector<std::int64_t> labels(nodes);
    std::memcpy(labels.data(), in + offset, nodes * 8);
    offset += nodes * 8;
    std::vector<std::uint8_t> deleted(in + offset, in + offset + nodes);
    offset += nodes;
    std::vector<std::uint8_t> levels(in + offset, in + offset + nodes);
    offset += nodes;

    std::size_t live = 0;
    std::uint64_t upper_words = 0;
    int top_level = -1;
    std::unordered_set<std::int64_t> live_labels;
    for (std::size_t node = 0; node < nodes; ++node) {
      if (labels[node] < 0 || labels[node] >= h.next_label) corrupt("id out of range");
      if (deleted[node] > 1) corrupt("bad deleted flag");
      if (deleted[node] == 0) {
        ++live;
        if (!live_labels.insert(labels[node]).second) corrupt("two live vectors share an id");
      }
      if (levels[node] >= graph::kMaxLevel) corrupt("node level out of range");
      top_level = std::max<int>(top_level, levels[node]);
      upper_words += static_cast<std::uint64_t>(levels[node]) * (1 + h.M);
    }
    if (live != h.live_count) corrupt("live count does not match the deleted flags");
    if (top_level != h.max_level) corrupt("max level does not match node levels");
    if (nodes > 0 && levels[h.entry_point] != h.max_level) corrupt("entry point is not on top");
    if (fixed_payload_bytes(h) + upper_words * 4 != h.payload_bytes) {
      corrupt("payload size does not match node levels");
    }

    graph::HnswGraph& graph = index->graph_;
    graph.reserve(nodes);
    for (std::size_t node = 0; node < nodes; ++node) graph.append_node(levels[node]);
    const std::size_t level0_words = nodes * graph.level0_stride();
    if (nodes > 0) std::memcpy(graph.level0_row(0), in + offset, level0_words * 4);
    offset += level0_words * 4;
    for (std::size_t node = 0; node < nodes; ++node) {
      const std::uint32_t* row = graph.level0_row(static_cast<NodeId>(node));
      if (row[0] > graph.max_degree0()) corrupt("link count out of range");
      for (std::uint32_t i = 1; i <= row[0]; ++i) {
        if (row[i] >= nodes) corrupt("link to a node that does not exist");
      }
      const int level = levels[node];
      if (level == 0) continue;
      std::uint32_t* upper = graph.upper_rows(static_cast<NodeId>(node));
      const std::size_t words = static_cast<std::size_t>(level) * graph.upper_stride();
      std::memcpy(upper, in + offset, words * 4);
      offset += words * 4;
      for (int l = 0; l < level; ++l) {
        const std::uint32_t* link_row = upper + static_cast<std::size_t>(l) * graph.upper_stride();
        if (link_row[0] > h.M) corrupt("link count out of range");
        for (std::uint32_t i = 1; i <= link_row[0]; ++i) {
          // An upper-level link must lead to a node that lives on that level.
          if (link_row[i] >= nodes || levels[link_row[i]] < l + 1) corrupt("bad upper link");
        }
      }
    }
    graph.set_entry(h.entry_point, h.max_level);

    index->rotation_.resize(h.rotation_floats);
    std::memcpy(index->rotation_.data(), in + offset, h.rotation_floats * sizeof(float));
    offset += h.rotation_floats * sizeof(float);
    for (float value : index->rotation_) {
      if (!std::isfinite(value)) corrupt("rotation contains NaN or inf");
    }
    if (offset != body_end) corrupt("payload layout does not match its size");

    index->store_.restore(std::move(labels), std::move(deleted), h.next_label);
    if (params.prefix_dim != 0 && params.metric != Metric::l2) {
      index->prefix_inv_norms_.assign(nodes, 0.0f);
      for (std::size_t node = 0; node < nodes; ++node) {
        index->compute_prefix_norm(static_cast<NodeId>(node));
      }
    }
    return index;
  }
};

void Index::save(const std::string& path, const std::string& metadata) const {
  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = read_lock();
  // Unique temporary name in the same directory, then an atomic rename over the target.
  static std::atomic<unsigned> counter{0};
  const std::string temporary =
      path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  {
    std::unique_ptr<std::FILE, FileCloser> file(std::fopen(temporary.c_str(), "wb"));
    if (!file) throw IoError("cannot open '" + temporary + "' for writing");
    try {
      Writer out(file.get());
      IndexSerializer::write(*this, metadata, out);
      if (std::fflush(file.get()) != 0) throw IoError("write failed (disk full?)");
      ::fsync(::fileno(file.get()));
    } catch (...) {
      file.reset();
      std::remove(temporary.c_str());
      throw;
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::remove(temporary.c_str());
    throw IoError("cannot rename the temporary file onto '" + path + "'");
  }
}

std::string Index::to_bytes(const std::string& metadata) const {
  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = read_lock();
  std::string bytes;
  Writer out(&bytes);
  IndexSerializer::write(*this, metadata, out);
  return bytes;
}

std::unique_ptr<Index> Index::load(const std::string& path, std::string& metadata) {
  return IndexSerializer::read(read_file(path), metadata);
}

std::unique_ptr<Index> Index::from_bytes(const std::string& bytes, std::string& metadata) {
  return IndexSerializer::read(bytes, metadata);
}

FileHeader read_header(const std::string& path, std::string& metadata) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError("cannot open '" + path + "' for reading");
  const std::streamsize size = in.tellg();
  if (size < 0) throw IoError("cannot read '" + path + "'");
  std::array<unsigned char, kHeaderBytes> header{};
  in.seekg(0);
  if (static_cast<std::size_t>(size) >= kHeaderBytes) {
    in.read(reinterpret_cast<char*>(header.data()), kHeaderBytes);
  }
  const FileHeader h = decode_header(header.data(), static_cast<std::size_t>(size));
  metadata.assign(h.metadata_bytes, '\0');
  std::uint32_t stored_crc = 0;
  in.read(metadata.data(), static_cast<std::streamsize>(h.metadata_bytes));
  in.read(reinterpret_cast<char*>(&stored_crc), 4);
  if (!in) throw IoError("cannot read '" + path + "'");
  if (stored_crc != crc32(0, metadata.data(), metadata.size())) {
    corrupt("metadata checksum mismatch");
  }
  return h;
}

}  // namespace matry
