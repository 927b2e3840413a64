// The index file format, version 1 (all integers little-endian, as written by the host):
//
//   header, 128 bytes   magic "MATRYIDX", format version, endianness tag 0x01020304, header size,
//                       metric, dim, node and live counts, M, ef_construction, seed, ef,
//                       prefix_dim, next id, entry point, max level, metadata / rotation /
//                       payload sizes, flags, CRC-32 of the header bytes before it
//   metadata            JSON text (opaque to C++), then its CRC-32
//   payload             vectors f32[nodes*dim], labels i64[nodes], deleted u8[nodes],
//                       levels u8[nodes], level-0 links u32[nodes*(1+2M)],
//                       upper links u32[sum(level)*(1+M)], rotation f32[rotation_floats]
//   trailer             CRC-32 of every byte before it
//
// Load checks sizes, both CRCs and then every field and link before building an index; any
// failure is a CorruptIndex error naming what is wrong.
#pragma once

#include <cstdint>
#include <string>

namespace matry {

constexpr std::uint32_t kFormatVersion = 1;

struct FileHeader {
  std::uint32_t format_version = kFormatVersion;
  std::uint32_t metric = 0;
  std::uint64_t dim = 0;
  std::uint64_t node_count = 0;
  std::uint64_t live_count = 0;
  std::uint32_t M = 0;
  std::uint32_t ef_construction = 0;
  std::uint64_t seed = 0;
  std::uint64_t ef = 0;
  std::uint64_t prefix_dim = 0;
  std::int64_t next_label = 0;
  std::uint32_t entry_point = 0;
  std::int32_t max_level = -1;
  std::uint64_t metadata_bytes = 0;
  std::uint64_t rotation_floats = 0;
  std::uint64_t payload_bytes = 0;
  std::uint32_t flags = 0;
};

// Header and metadata of a saved index, checked (sizes and CRCs) without reading the payload.
FileHeader read_header(const std::string& path, std::string& metadata);

}  // namespace matry
