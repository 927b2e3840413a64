// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zlib computes it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace matry {

// Continues a running CRC: crc32(crc32(0, a), b) == crc32(0, a + b).
std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t length);

}  // namespace matry
