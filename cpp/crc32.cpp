#include "crc32.hpp"

#include <array>

namespace matry {
namespace {

// Slicing-by-8 tables: eight bytes per step instead of one.
using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

Tables make_tables() {
  Tables tables{};
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    std::uint32_t crc = byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    tables[0][byte] = crc;
  }
  for (std::uint32_t byte = 0; byte < 256; ++byte) {
    for (std::size_t slice = 1; slice < 8; ++slice) {
      const std::uint32_t previous = tables[slice - 1][byte];
      tables[slice][byte] = (previous >> 8) ^ tables[0][previous & 0xFFu];
    }
  }
  return tables;
}

}  // namespace

std::uint32_t crc32(std::uint32_t crc, const void* data, std::size_t length) {
  static const Tables tables = make_tables();
  const auto* bytes = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (length >= 8) {
    const std::uint32_t low =
        crc ^
        (static_cast<std::uint32_t>(bytes[0]) | static_cast<std::uint32_t>(bytes[1]) << 8 |
         static_cast<std::uint32_t>(bytes[2]) << 16 | static_cast<std::uint32_t>(bytes[3]) << 24);
    crc = tables[7][low & 0xFFu] ^ tables[6][(low >> 8) & 0xFFu] ^ tables[5][(low >> 16) & 0xFFu] ^
          tables[4][low >> 24] ^ tables[3][bytes[4]] ^ tables[2][bytes[5]] ^ tables[1][bytes[6]] ^
          tables[0][bytes[7]];
    bytes += 8;
    length -= 8;
  }
  while (length-- > 0) crc = (crc >> 8) ^ tables[0][(crc ^ *bytes++) & 0xFFu];
  return ~crc;
}

}  // namespace matry
