// The index file format, versions 1 and 2. Integers are in the byte order of the host that wrote
// the file; the endianness tag 0x01020304 tells a reader which, and a file of the other order is
// refused. Every machine matry runs on today is little-endian.
//
//   header, 128 bytes   magic "MATRYIDX", format version, endianness tag, header size,
//                       metric, dim, node and live counts, M, ef_construction, seed, ef,
//                       prefix_dim, next id, entry point, max level, metadata / rotation /
//                       payload sizes, flags, CRC-32 of the header bytes before it
//                       (byte offsets: for_each_header_field in io.cpp)
//   metadata            JSON text (opaque to C++), then its CRC-32
//   payload             vectors f32[nodes*dim], labels i64[nodes], deleted u8[nodes],
//                       levels u8[nodes], [v2: zero padding to a 64-byte offset],
//                       level-0 blocks u32[nodes*stride] (v1: stride 1+2M = count and links;
//                       v2: count, links, then the node's int8 payload: lo, step and a norm
//                       as f32, then one code byte per coded dim (prefix_dim if set, else
//                       dim), padded to whole 64-byte lines),
//                       upper links u32[sum(level)*(1+M)], rotation f32[rotation_floats],
//                       [v2: quantizer offset and scale, f32[coded dims] each]
//   trailer             CRC-32 of every byte before it
//
// Load checks sizes, both CRCs and then every field, link and invariant the index relies on
// before building it; any failure is a CorruptIndex error naming what is wrong.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace matry {

// Version 1: f32 traversal (still written for indexes without codes, so older matry reads them).
// Version 2: the same sections, plus int8 codes inside the level-0 blocks (64-byte blocks that
// start 64-byte aligned in the file) and the quantizer's parameters after the rotation.
constexpr std::uint32_t kFormatVersionF32 = 1;
constexpr std::uint32_t kFormatVersion = 2;

struct FileHeader {
  std::uint32_t format_version = kFormatVersionF32;
  std::uint32_t metric = 0;
  std::uint64_t dim = 0;
  std::uint64_t node_count = 0;
  std::uint64_t live_count = 0;
  std::uint32_t M = 0;
  std::uint32_t ef_construction = 0;
  std::uint64_t seed = 0;
  std::uint64_t ef = 0;
  std::uint64_t prefix_dim = 0;
  // One past the largest id, up to 2^63. Files before this field was read as unsigned stored
  // it as an int64, and every value they could read back was non-negative: the same bits.
  std::uint64_t next_label = 0;
  std::uint32_t entry_point = 0;
  std::int32_t max_level = -1;
  std::uint64_t metadata_bytes = 0;
  std::uint64_t rotation_floats = 0;
  std::uint64_t payload_bytes = 0;
  std::uint32_t flags = 0;
};

// Where Index::save_to writes: a file, a buffer, or a caller's stream (the bindings wrap Python
// file objects). Writes arrive in order; begin() announces the total first.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual void begin(std::uint64_t total_bytes) { static_cast<void>(total_bytes); }
  virtual void write(const void* data, std::size_t bytes) = 0;
};

// Where Index::load_from reads: sections go straight into the index's own buffers, so a load
// needs the index's memory plus nothing of the file's size.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Reads up to `bytes` into `to`; returns how many (0 only at the end of the data).
  virtual std::size_t read_some(void* to, std::size_t bytes) = 0;
  // Total bytes when known (a file, a buffer): then the header must match it exactly.
  virtual std::optional<std::uint64_t> size() const { return std::nullopt; }
};

// "int8" when the file carries int8 codes, else "none".
const char* quantization_of(const FileHeader& header);

// Header and metadata of a saved index, checked (sizes and CRCs) without reading the payload.
FileHeader read_header(const std::string& path, std::string& metadata);

}  // namespace matry
