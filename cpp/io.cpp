// Reading and writing index files (the format is described in io.hpp).
//
// What a crash can leave. save() writes a temporary file in the target's directory, fsyncs it,
// renames it over the target and fsyncs the directory. Killed or crashed at any moment, the
// target holds either its old contents or the complete new index, never a mix. The temporary
// file can stay behind: it is named ".<16 hex digits>.matry-tmp-<pid>-<n>" (the digits hash the
// target's file name) and the next save to the same target removes every such file whose
// process has exited. A symlink target is followed (the file it points to is replaced, the link
// stays); an existing target that is not a regular file is never replaced.
#include "io.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "crc32.hpp"
#include "errors.hpp"
#include "index.hpp"

namespace matry {
namespace {

constexpr char kMagic[8] = {'M', 'A', 'T', 'R', 'Y', 'I', 'D', 'X'};
constexpr std::uint32_t kEndianTag = 0x01020304u;
constexpr std::uint32_t kHeaderBytes = 128;
constexpr std::size_t kFirstFieldAt = sizeof(kMagic);
constexpr std::size_t kHeaderCrcAt = kHeaderBytes - 4;
constexpr std::uint32_t kFlagRequireUnitNorm = 1u;
constexpr std::uint32_t kFlagInt8 = 2u;              // version 2: int8 codes in level-0 blocks
constexpr std::uint32_t kFlagInt8PerDimension = 4u;  // ... fitted per dimension (SQ8)
constexpr std::uint32_t kKnownFlagsV1 = kFlagRequireUnitNorm;
constexpr std::uint32_t kKnownFlagsV2 = kFlagRequireUnitNorm | kFlagInt8 | kFlagInt8PerDimension;
constexpr std::size_t kSectionAlignment = 64;  // v2: level-0 blocks start on a cache line
constexpr int kMaxSymlinkHops = 40;            // Linux's own limit (ELOOP)
constexpr int kTemporaryAttempts = 1000;       // names tried before giving up on EEXIST

// The header layout, written down once: the byte offset of every field between the magic and the
// CRC, in file order. Encoding and decoding both walk this list. The endianness tag and the
// header size are constants of the format, not FileHeader members, so they come separately.
template <class Header, class Word, class Visit>
constexpr void for_each_header_field(Header& h, Word& endian_tag, Word& header_bytes,
                                     Visit&& visit) {
  visit(std::size_t{8}, h.format_version);
  visit(std::size_t{12}, endian_tag);
  visit(std::size_t{16}, header_bytes);
  visit(std::size_t{20}, h.metric);
  visit(std::size_t{24}, h.dim);
  visit(std::size_t{32}, h.node_count);
  visit(std::size_t{40}, h.live_count);
  visit(std::size_t{48}, h.M);
  visit(std::size_t{52}, h.ef_construction);
  visit(std::size_t{56}, h.seed);
  visit(std::size_t{64}, h.ef);
  visit(std::size_t{72}, h.prefix_dim);
  visit(std::size_t{80}, h.next_label);
  visit(std::size_t{88}, h.entry_point);
  visit(std::size_t{92}, h.max_level);
  visit(std::size_t{96}, h.metadata_bytes);
  visit(std::size_t{104}, h.rotation_floats);
  visit(std::size_t{112}, h.payload_bytes);
  visit(std::size_t{120}, h.flags);
}

// The fields tile the bytes between the magic and the CRC exactly: no gap, no overlap.
constexpr bool header_fields_tile() {
  FileHeader h;
  std::uint32_t endian_tag = 0;
  std::uint32_t header_bytes = 0;
  std::size_t next = kFirstFieldAt;
  bool tiled = true;
  for_each_header_field(h, endian_tag, header_bytes, [&](std::size_t offset, const auto& field) {
    tiled = tiled && offset == next;
    next = offset + sizeof(field);
  });
  return tiled && next == kHeaderCrcAt;
}
static_assert(header_fields_tile(), "header field offsets must tile bytes 8..124");

// memcpy with a possibly empty range: an empty std::vector's data() may be null, and
// memcpy(nullptr, _, 0) is undefined behaviour.
void copy_bytes(void* to, const void* from, std::size_t bytes) {
  if (bytes != 0) std::memcpy(to, from, bytes);
}

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
  std::memcpy(out.data(), kMagic, sizeof(kMagic));
  const std::uint32_t endian_tag = kEndianTag;
  const std::uint32_t header_bytes = kHeaderBytes;
  for_each_header_field(h, endian_tag, header_bytes, [&](std::size_t offset, const auto& field) {
    put(out.data(), offset, field);
  });
  put<std::uint32_t>(out.data(), kHeaderCrcAt, crc32(0, out.data(), kHeaderCrcAt));
  return out;
}

[[noreturn]] void corrupt(const std::string& what) { throw CorruptIndex(what); }

// Parses and range-checks the fixed header; `file_bytes` is the whole file's size when known
// (a stream's end is found by reading).
FileHeader decode_header(const unsigned char* in, std::optional<std::uint64_t> file_bytes) {
  if (file_bytes && *file_bytes < kHeaderBytes + 8) {
    corrupt("file is too short to be a matry index (" + std::to_string(*file_bytes) + " bytes)");
  }
  if (std::memcmp(in, kMagic, sizeof(kMagic)) != 0)
    corrupt("not a matry index file (bad magic bytes)");
  FileHeader h;
  std::uint32_t endian_tag = 0;
  std::uint32_t header_bytes = 0;
  for_each_header_field(h, endian_tag, header_bytes, [&](std::size_t offset, auto& field) {
    field = take<std::remove_reference_t<decltype(field)>>(in, offset);
  });
  if (endian_tag != kEndianTag) {
    corrupt(endian_tag == 0x04030201u ? "file was written with the other byte order"
                                      : "bad endianness tag");
  }
  if (take<std::uint32_t>(in, kHeaderCrcAt) != crc32(0, in, kHeaderCrcAt)) {
    corrupt("header checksum mismatch");
  }
  if (h.format_version != kFormatVersionF32 && h.format_version != kFormatVersion) {
    corrupt("unsupported format version " + std::to_string(h.format_version) +
            " (this matry reads versions " + std::to_string(kFormatVersionF32) + " and " +
            std::to_string(kFormatVersion) + ")");
  }
  if (header_bytes != kHeaderBytes) corrupt("bad header size");

  // The same limits Index accepts (index.cpp): whatever an index can hold, a file can carry.
  if (h.metric > 2) corrupt("unknown metric code " + std::to_string(h.metric));
  if (h.dim < 1 || h.dim > (1u << 16)) corrupt("dim out of range");
  if (h.M < 2 || h.M > graph::kMaxM) corrupt("M out of range");
  if (h.ef_construction < 1 || h.ef < 1) corrupt("ef out of range");
  if (h.prefix_dim >= h.dim && h.prefix_dim != 0) corrupt("prefix_dim out of range");
  if (h.node_count > graph::kMaxNodes) corrupt("node count out of range");
  if (h.live_count > h.node_count) corrupt("live count exceeds node count");
  if (h.next_label > kLabelCount) corrupt("next id out of range (above 2^63)");
  if (h.max_level < -1 || h.max_level >= graph::kMaxLevel) corrupt("max level out of range");
  if ((h.node_count == 0) != (h.max_level == -1)) corrupt("max level does not match node count");
  if (h.node_count == 0 ? h.entry_point != 0 : h.entry_point >= h.node_count) {
    corrupt("entry point out of range");
  }
  if (h.rotation_floats != 0 && h.rotation_floats != h.dim * h.dim) {
    corrupt("rotation size does not match dim");
  }
  const std::uint32_t known = h.format_version == kFormatVersionF32 ? kKnownFlagsV1 : kKnownFlagsV2;
  if ((h.flags & ~known) != 0) corrupt("unknown flags " + std::to_string(h.flags));
  if ((h.format_version == kFormatVersion) != ((h.flags & kFlagInt8) != 0)) {
    corrupt("format version " + std::to_string(h.format_version) +
            " does not match the quantization flag");
  }
  if ((h.flags & kFlagInt8PerDimension) != 0 && (h.flags & kFlagInt8) == 0) {
    corrupt("per-dimension flag without int8 codes");
  }
  if ((h.flags & kFlagInt8) != 0 && h.prefix_dim != 0 && h.metric == 2) {
    corrupt("int8 codes with a prefix need metric cosine or ip");
  }
  if (file_bytes) {
    const std::uint64_t limit = *file_bytes;
    if (h.metadata_bytes > limit || h.payload_bytes > limit ||
        kHeaderBytes + h.metadata_bytes + 4 + h.payload_bytes + 4 != limit) {
      corrupt("file size does not match its header (truncated or trailing bytes)");
    }
  } else if (h.metadata_bytes > kLabelCount || h.payload_bytes > kLabelCount) {
    corrupt("section sizes out of range");
  }
  return h;
}

bool int8_codes(const FileHeader& h) { return (h.flags & kFlagInt8) != 0; }

// Dims a code covers: the prefix the graph is built on, else all (index.hpp code_dims).
std::uint64_t coded_dims(const FileHeader& h) { return h.prefix_dim != 0 ? h.prefix_dim : h.dim; }

// Bytes of one level-0 block: the graph's layout for this M and payload.
std::uint64_t level0_block_bytes(const FileHeader& h) {
  const std::size_t payload =
      int8_codes(h)
          ? quant::Int8Quantizer(coded_dims(h), quant::Int8Mode::per_vector).payload_bytes()
          : 0;
  return graph::HnswGraph(h.M, 1, payload).level0_stride() * sizeof(std::uint32_t);
}

// Zero bytes before the level-0 blocks so that they start 64-byte aligned in the file (v2).
std::uint64_t level0_padding(const FileHeader& h) {
  if (!int8_codes(h)) return 0;
  const std::uint64_t n = h.node_count;
  const std::uint64_t before = kHeaderBytes + h.metadata_bytes + 4 + n * h.dim * 4 + n * 8 + n + n;
  return (kSectionAlignment - before % kSectionAlignment) % kSectionAlignment;
}

// The quantizer's offset and scale, f32[dim] each (v2).
std::uint64_t quantizer_bytes(const FileHeader& h) { return int8_codes(h) ? 8 * coded_dims(h) : 0; }

std::uint64_t fixed_payload_bytes(const FileHeader& h) {
  const std::uint64_t n = h.node_count;
  return n * h.dim * 4 + n * 8 + n + n + level0_padding(h) + n * level0_block_bytes(h) +
         h.rotation_floats * 4 + quantizer_bytes(h);
}

// ---------------------------------------------------------------------------------------------
// Paths and file descriptors

std::string error_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

// Bytes in a valid UTF-8 sequence starting at `at`, or 0 when it is not one (Python's strict
// decoder rules: no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_length(const std::string& text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if (byte(at + i) < low || byte(at + i) > high) return 0;
    low = 0x80;
    high = 0xBF;
  }
  return length;
}

// A path as error messages show it: quoted, with control bytes and bytes that are not UTF-8
// escaped, so the Python exception can always be built from the message.
std::string shown(const std::string& path) {
  std::string out = "'";
  for (std::size_t at = 0; at < path.size();) {
    const auto lead = static_cast<unsigned char>(path[at]);
    const std::size_t length = utf8_length(path, at);
    if (length != 0 && lead >= 0x20 && lead != 0x7F) {
      out.append(path, at, length);
      at += length;
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", lead);
      out += escaped;
      ++at;
    }
  }
  return out + "'";
}

// std::string can carry a NUL that the C file API would silently cut the path at.
void check_path_argument(const std::string& path) {
  if (path.empty()) throw InvalidArgument("path: empty");
  if (path.find('\0') != std::string::npos) {
    throw InvalidArgument("path: contains a NUL byte (" + shown(path) + ")");
  }
}

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

std::string directory_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string name_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports the result (close can report a failed write-back).
  int close() {
    const int result = ::close(fd_);
    fd_ = -1;
    return result;
  }

 private:
  int fd_;
};

struct DirectoryCloser {
  void operator()(DIR* directory) const { ::closedir(directory); }
};

// Opens an existing regular file for reading; anything else (FIFO, device, directory) is refused
// before it is opened, as opening a FIFO waits for a writer and opening a device can act on it.
FileDescriptor open_regular_file(const std::string& path, std::uint64_t& size) {
  check_path_argument(path);
  struct stat info{};
  if (::stat(path.c_str(), &info) != 0) {
    throw IoError("cannot open " + shown(path) + " for reading: " + error_text(errno));
  }
  if (!S_ISREG(info.st_mode)) {
    throw IoError("path: " + shown(path) + " is " + kind_of(info.st_mode) +
                  ", not a regular index file");
  }
  // O_NONBLOCK: if the path was swapped for a FIFO since the stat, open still returns at once.
  FileDescriptor file(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) {
    throw IoError("cannot open " + shown(path) + " for reading: " + error_text(errno));
  }
  if (::fstat(file.get(), &info) != 0 || !S_ISREG(info.st_mode)) {
    throw IoError("path: " + shown(path) + " is not a regular index file");
  }
  size = static_cast<std::uint64_t>(info.st_size);
  return file;
}

// Reads up to `bytes` bytes at `offset`; returns how many there were before the end of file.
std::size_t read_at(const FileDescriptor& file, const std::string& path, std::uint64_t offset,
                    void* out, std::size_t bytes) {
  auto* cursor = static_cast<char*>(out);
  std::size_t done = 0;
  while (done < bytes) {
    const ssize_t got =
        ::pread(file.get(), cursor + done, bytes - done, static_cast<off_t>(offset + done));
    if (got == 0) break;
    if (got < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot read " + shown(path) + ": " + error_text(errno));
    }
    done += static_cast<std::size_t>(got);
  }
  return done;
}

// Where a save writes: `path`, or the file a symlink at `path` leads to (followed hop by hop, so
// a dangling link still names the file to create).
struct SaveTarget {
  std::string path;
  bool exists = false;
  mode_t mode = 0;
};

std::string link_destination(const std::string& link) {
  std::vector<char> buffer(PATH_MAX);
  for (;;) {
    const ssize_t length = ::readlink(link.c_str(), buffer.data(), buffer.size());
    if (length < 0) throw IoError("cannot read the link " + shown(link) + ": " + error_text(errno));
    if (static_cast<std::size_t>(length) < buffer.size()) {
      const std::string destination(buffer.data(), static_cast<std::size_t>(length));
      if (destination.empty()) throw IoError("cannot follow the empty link " + shown(link));
      if (destination.front() == '/') return destination;
      return directory_of(link) + "/" + destination;
    }
    buffer.resize(buffer.size() * 2);
  }
}

SaveTarget resolve_save_target(const std::string& path) {
  check_path_argument(path);
  if (path.back() == '/') throw IoError("path: " + shown(path) + " names a directory, not a file");
  std::string current = path;
  for (int hops = 0;; ++hops) {
    struct stat info{};
    if (::lstat(current.c_str(), &info) != 0) {
      if (errno == ENOENT) return {current, false, 0};
      throw IoError("cannot save to " + shown(path) + ": " + error_text(errno));
    }
    if (S_ISLNK(info.st_mode)) {
      if (hops == kMaxSymlinkHops) {
        throw IoError("cannot save to " + shown(path) + ": " + error_text(ELOOP));
      }
      current = link_destination(current);
      continue;
    }
    if (!S_ISREG(info.st_mode)) {
      const std::string what =
          current == path ? shown(path) : shown(path) + " leads to " + shown(current) + ", which";
      throw IoError("path: " + what + " is " + kind_of(info.st_mode) +
                    ", not a regular file; save never replaces one");
    }
    return {current, true, info.st_mode};
  }
}

// Temporary files of one target: "." + 16 hex digits of a hash of its name + ".matry-tmp-", then
// "<pid>-<n>". Short and fixed-length whatever the target's name, so they fit in NAME_MAX.
std::string temporary_prefix(const std::string& target_name) {
  std::uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a
  for (const char c : target_name) {
    hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  }
  char digits[17];
  std::snprintf(digits, sizeof(digits), "%016llx", static_cast<unsigned long long>(hash));
  return std::string(".") + digits + ".matry-tmp-";
}

// The pid in a "<pid>-<n>" suffix, or 0 if `suffix` is not exactly that.
pid_t pid_of_temporary(const std::string& suffix) {
  const std::size_t dash = suffix.find('-');
  if (dash == 0 || dash == std::string::npos || dash + 1 == suffix.size()) return 0;
  const auto digits = [](const std::string& text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  const std::string pid = suffix.substr(0, dash);
  if (!digits(pid) || !digits(suffix.substr(dash + 1)) || pid.size() > 9) return 0;
  return static_cast<pid_t>(std::stol(pid));
}

bool process_is_running(pid_t pid) {
  if (pid == ::getpid()) return true;  // another thread of this process may be saving now
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// Removes the temporary files of a save to this target that was killed before it could clean up:
// exact prefix, "<pid>-<n>" suffix, a regular file, and its process no longer runs.
void remove_stale_temporaries(const std::string& directory, const std::string& prefix) {
  const std::unique_ptr<DIR, DirectoryCloser> listing(::opendir(directory.c_str()));
  if (!listing) return;  // unreadable directory: the save itself may still work
  while (const dirent* entry = ::readdir(listing.get())) {
    const std::string name = entry->d_name;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const pid_t pid = pid_of_temporary(name.substr(prefix.size()));
    if (pid <= 0 || process_is_running(pid)) continue;
    const std::string stale = directory + "/" + name;
    struct stat info{};
    if (::lstat(stale.c_str(), &info) == 0 && S_ISREG(info.st_mode)) ::unlink(stale.c_str());
  }
}

// fsync of a directory makes a rename in it durable. Filesystems that cannot sync a directory
// (EINVAL) have nothing to sync; a directory we may write but not read (EACCES) cannot be
// opened for it. Both are skipped, as PostgreSQL and SQLite do; any other failure is reported.
void sync_directory(const std::string& directory, const std::string& path) {
  FileDescriptor handle(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (handle.get() < 0) {
    if (errno == EACCES) return;
    throw IoError("saved " + shown(path) +
                  " but cannot open its directory to sync it: " + error_text(errno));
  }
  if (::fsync(handle.get()) != 0 && errno != EINVAL) {
    throw IoError("saved " + shown(path) +
                  " but syncing its directory failed (the new file may not survive a power "
                  "loss): " +
                  error_text(errno));
  }
}

// A temporary file that is removed unless it was renamed into place.
class TemporaryFile {
 public:
  TemporaryFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  ~TemporaryFile() {
    if (!renamed_) ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  FileDescriptor& fd() { return fd_; }
  void mark_renamed() { renamed_ = true; }

 private:
  std::string path_;
  FileDescriptor fd_;
  bool renamed_ = false;
};

std::unique_ptr<TemporaryFile> create_temporary(const std::string& directory,
                                                const std::string& prefix) {
  static std::atomic<unsigned> counter{0};
  const std::string base =
      (directory == "/" ? "/" : directory + "/") + prefix + std::to_string(::getpid()) + "-";
  int error = EEXIST;
  for (int attempt = 0; attempt < kTemporaryAttempts && error == EEXIST; ++attempt) {
    std::string path = base + std::to_string(counter.fetch_add(1));
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd >= 0) return std::make_unique<TemporaryFile>(std::move(path), fd);
    // EEXIST: left by a process that ran with our pid before and still runs; take the next n.
    error = errno;
  }
  throw IoError("cannot create a temporary file in " + shown(directory) + ": " + error_text(error));
}

// A file descriptor as a sink.
class FdSink : public ByteSink {
 public:
  explicit FdSink(int fd) : fd_(fd) {}
  void write(const void* data, std::size_t bytes) override {
    const auto* cursor = static_cast<const char*>(data);
    while (bytes > 0) {
      const ssize_t written = ::write(fd_, cursor, bytes);
      if (written < 0) {
        if (errno == EINTR) continue;
        throw IoError("write failed: " + error_text(errno));
      }
      cursor += written;
      bytes -= static_cast<std::size_t>(written);
    }
  }

 private:
  int fd_;
};

class StringSink : public ByteSink {
 public:
  explicit StringSink(std::string& out) : out_(out) {}
  void begin(std::uint64_t total_bytes) override { out_.reserve(total_bytes); }
  void write(const void* data, std::size_t bytes) override {
    out_.append(static_cast<const char*>(data), bytes);
  }

 private:
  std::string& out_;
};

// Buffers small writes into a sink and keeps a running CRC of everything written. Sections
// larger than the buffer go to the sink directly, without a copy.
class Writer {
 public:
  explicit Writer(ByteSink& sink) : sink_(sink) { buffer_.reserve(kBufferBytes); }
  void write(const void* data, std::size_t bytes) {
    if (bytes == 0) return;
    crc_ = crc32(crc_, data, bytes);
    const auto* begin = static_cast<const char*>(data);
    if (buffer_.size() + bytes <= kBufferBytes) {
      buffer_.insert(buffer_.end(), begin, begin + bytes);
      return;
    }
    flush();
    if (bytes < kBufferBytes) {
      buffer_.insert(buffer_.end(), begin, begin + bytes);
    } else {
      sink_.write(begin, bytes);
    }
  }
  void write_crc() {
    const std::uint32_t value = crc_;
    write(&value, 4);
  }
  void flush() {
    if (!buffer_.empty()) sink_.write(buffer_.data(), buffer_.size());
    buffer_.clear();
  }

 private:
  // The bound on what a save holds beside the index (besides the level array, 1 byte/node).
  static constexpr std::size_t kBufferBytes = 1 << 20;

  ByteSink& sink_;
  std::vector<char> buffer_;
  std::uint32_t crc_ = 0;
};

// A file read front to back with read(2): sections land in their final buffers.
class FdSource : public ByteSource {
 public:
  FdSource(int fd, std::uint64_t size, std::string path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  std::size_t read_some(void* to, std::size_t bytes) override {
    for (;;) {
      const ssize_t got = ::read(fd_, to, bytes);
      if (got >= 0) return static_cast<std::size_t>(got);
      if (errno != EINTR) throw IoError("cannot read " + shown(path_) + ": " + error_text(errno));
    }
  }
  std::optional<std::uint64_t> size() const override { return size_; }

 private:
  int fd_;
  std::uint64_t size_;
  std::string path_;
};

// Bytes in memory (a buffer, or a read-only file mapping whose sections may be viewed in place).
class MemorySource : public ByteSource {
 public:
  MemorySource(const unsigned char* data, std::size_t size) : data_(data), size_(size) {}
  std::size_t read_some(void* to, std::size_t bytes) override {
    const std::size_t count = std::min(bytes, size_ - at_);
    copy_bytes(to, data_ + at_, count);
    at_ += count;
    return count;
  }
  std::optional<std::uint64_t> size() const override { return size_; }
  const unsigned char* peek() const { return data_ + at_; }
  // The next `bytes` in place (and skips them), or null when fewer remain.
  const unsigned char* view(std::size_t bytes) {
    if (size_ - at_ < bytes) return nullptr;
    const unsigned char* at = data_ + at_;
    at_ += bytes;
    return at;
  }

 private:
  const unsigned char* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

// Reads exact sections from a source, keeping a running CRC and the offset.
class Reader {
 public:
  Reader(ByteSource& source, MemorySource* mapped) : source_(source), mapped_(mapped) {}
  void read(void* to, std::size_t bytes) {
    auto* cursor = static_cast<unsigned char*>(to);
    std::size_t done = 0;
    while (done < bytes) {
      const std::size_t got = source_.read_some(cursor + done, bytes - done);
      if (got == 0) truncated();
      done += got;
    }
    crc_ = crc32(crc_, to, bytes);
    offset_ += bytes;
  }
  // A section of a mapped source in place (its CRC counted), else null: read() it instead
  // (no mapping, or a section not aligned for in-place use, as in files before alignment).
  const unsigned char* view(std::size_t bytes, std::size_t alignment) {
    if (mapped_ == nullptr || bytes == 0) return nullptr;
    if (reinterpret_cast<std::uintptr_t>(mapped_->peek()) % alignment != 0) return nullptr;
    const unsigned char* at = mapped_->view(bytes);
    if (at == nullptr) truncated();
    crc_ = crc32(crc_, at, bytes);
    offset_ += bytes;
    return at;
  }
  std::uint32_t crc() const { return crc_; }
  std::uint64_t offset() const { return offset_; }

 private:
  [[noreturn]] void truncated() const {
    corrupt("file ends early at byte " + std::to_string(offset_) + " (truncated)");
  }
  ByteSource& source_;
  MemorySource* mapped_;
  std::uint32_t crc_ = 0;
  std::uint64_t offset_ = 0;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

class IndexSerializer {
 public:
  static void write(const Index& index, const std::string& json, ByteSink& sink) {
    // Spaces after the JSON text (still the same JSON) put the rows on a 64-byte offset, so a
    // load with mmap can read them in place.
    std::string metadata = json;
    metadata.append((kSectionAlignment - (kHeaderBytes + json.size() + 4) % kSectionAlignment) %
                        kSectionAlignment,
                    ' ');
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
    if (index.quantized()) {
      // Version 2 only when it carries codes: an f32 index stays readable by older matry.
      h.format_version = kFormatVersion;
      h.flags |= kFlagInt8;
      if (index.params_.int8_mode == quant::Int8Mode::per_dimension)
        h.flags |= kFlagInt8PerDimension;
    } else {
      h.format_version = kFormatVersionF32;
    }
    std::uint64_t upper_words = 0;
    for (NodeId node = 0; node < nodes; ++node) {
      upper_words += static_cast<std::uint64_t>(graph.level_of(node)) * graph.upper_stride();
    }
    h.payload_bytes = fixed_payload_bytes(h) + upper_words * 4;

    sink.begin(kHeaderBytes + h.metadata_bytes + 4 + h.payload_bytes + 4);
    Writer out(sink);
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
    const std::vector<unsigned char> padding(level0_padding(h), 0);
    out.write(padding.data(), padding.size());
    if (nodes > 0) out.write(graph.level0_row(0), nodes * graph.level0_stride() * 4);
    for (NodeId node = 0; node < nodes; ++node) {
      const int level = graph.level_of(node);
      if (level > 0) out.write(graph.upper_rows(node), level * graph.upper_stride() * 4);
    }
    out.write(index.rotation_.data(), index.rotation_.size() * sizeof(float));
    if (index.quantized()) {
      out.write(index.quantizer_.offset().data(), coded_dims(h) * sizeof(float));
      out.write(index.quantizer_.scale().data(), coded_dims(h) * sizeof(float));
    }
    out.write_crc();
    out.flush();
  }

  // Reads every section straight into the new index's buffers (or, with `mapping`, views the
  // rows and a v2 file's level-0 blocks in place in `mapped`, a read-only file mapping it keeps
  // alive), checks the trailing CRC, and only then every field, link and invariant.
  static std::unique_ptr<Index> read(ByteSource& source, std::string& metadata,
                                     MemorySource* mapped, std::shared_ptr<void> mapping) {
    Reader in(source, mapped);
    if (source.size() && *source.size() < kHeaderBytes + 8) {
      corrupt("file is too short to be a matry index (" + std::to_string(*source.size()) +
              " bytes)");
    }
    std::array<unsigned char, kHeaderBytes> header_bytes{};
    in.read(header_bytes.data(), 8);  // the magic, so that a foreign file says so, not "short"
    if (std::memcmp(header_bytes.data(), kMagic, sizeof(kMagic)) != 0) {
      corrupt("not a matry index file (bad magic bytes)");
    }
    in.read(header_bytes.data() + 8, kHeaderBytes - 8);
    const FileHeader h = decode_header(header_bytes.data(), source.size());
    metadata.assign(h.metadata_bytes, '\0');
    in.read(metadata.data(), metadata.size());
    std::uint32_t metadata_crc = 0;
    in.read(&metadata_crc, 4);
    if (fixed_payload_bytes(h) > h.payload_bytes) corrupt("payload is shorter than its counts");

    IndexParams params;
    params.dim = h.dim;
    params.metric = static_cast<Metric>(h.metric);
    params.M = h.M;
    params.ef_construction = h.ef_construction;
    params.seed = h.seed;
    params.prefix_dim = h.prefix_dim;
    params.require_unit_norm = (h.flags & kFlagRequireUnitNorm) != 0;
    if (int8_codes(h)) {
      params.quantization = Quantization::int8;
      params.int8_mode = (h.flags & kFlagInt8PerDimension) != 0 ? quant::Int8Mode::per_dimension
                                                                : quant::Int8Mode::per_vector;
    }
    auto index = std::make_unique<Index>(params);
    index->ef_ = h.ef;
    const std::size_t nodes = h.node_count;
    const std::size_t dim = h.dim;

    // 1. Every section, into place. Only what sizes the next allocation is checked here.
    const std::uint64_t rows_at = in.offset();
    const float* rows = nullptr;
    if (const unsigned char* view = in.view(nodes * dim * sizeof(float), alignof(float))) {
      rows = reinterpret_cast<const float*>(view);
      index->store_.view_rows(rows, nodes);
    } else {
      float* copied = index->store_.reserve_rows_for_restore(nodes);
      in.read(copied, nodes * dim * sizeof(float));
      rows = copied;
    }
    std::vector<std::int64_t> labels(nodes);
    in.read(labels.data(), nodes * 8);
    std::vector<std::uint8_t> deleted(nodes);
    in.read(deleted.data(), nodes);
    std::vector<std::uint8_t> levels(nodes);
    in.read(levels.data(), nodes);
    std::uint64_t upper_words = 0;
    for (std::size_t node = 0; node < nodes; ++node) {
      if (levels[node] >= graph::kMaxLevel) corrupt("node level out of range");
      upper_words += static_cast<std::uint64_t>(levels[node]) * (1 + h.M);
    }
    if (fixed_payload_bytes(h) + upper_words * 4 != h.payload_bytes) {
      corrupt("payload size does not match node levels");
    }
    std::array<unsigned char, kSectionAlignment> padding{};
    in.read(padding.data(), level0_padding(h));

    graph::HnswGraph& graph = index->graph_;
    const std::size_t level0_bytes = nodes * graph.level0_stride() * 4;
    const unsigned char* level0_view =
        int8_codes(h) ? in.view(level0_bytes, kSectionAlignment) : nullptr;
    if (level0_view != nullptr) {  // v2 blocks start 64-byte aligned
      graph.restore_viewing_level0(reinterpret_cast<const std::uint32_t*>(level0_view),
                                   levels.data(), nodes);
    } else {
      graph.reserve(nodes);
      for (std::size_t node = 0; node < nodes; ++node) graph.append_node(levels[node]);
      if (nodes > 0) in.read(graph.level0_row(0), level0_bytes);
    }
    for (std::size_t node = 0; node < nodes; ++node) {
      if (levels[node] == 0) continue;
      in.read(graph.upper_rows(static_cast<NodeId>(node)),
              static_cast<std::size_t>(levels[node]) * graph.upper_stride() * 4);
    }
    index->rotation_.resize(h.rotation_floats);
    in.read(index->rotation_.data(), h.rotation_floats * sizeof(float));
    const std::size_t coded = int8_codes(h) ? coded_dims(h) : 0;
    std::vector<float> quantizer_offset(coded);
    std::vector<float> quantizer_scale(coded);
    in.read(quantizer_offset.data(), coded * sizeof(float));
    in.read(quantizer_scale.data(), coded * sizeof(float));
    const std::uint32_t computed_crc = in.crc();
    std::uint32_t stored_crc = 0;
    in.read(&stored_crc, 4);
    if (stored_crc != computed_crc) corrupt("checksum mismatch (the file is corrupted)");

    // 2. The checksum holds: now every field, link and invariant the index relies on.
    if (metadata_crc != crc32(0, metadata.data(), metadata.size())) {
      corrupt("metadata checksum mismatch");
    }
    // Cosine rows were normalized on the way in and "ip" rows checked to be unit length: the
    // distance 1 - dot relies on it. Same sum as Index::add's check, so what passed it passes.
    const bool unit_rows = params.metric == Metric::cosine ||
                           (params.metric == Metric::ip && params.require_unit_norm);
    for (std::size_t node = 0; node < nodes; ++node) {
      const float* row = rows + node * dim;
      double squared = 0.0;
      for (std::size_t j = 0; j < dim; ++j) {
        if (!std::isfinite(row[j])) corrupt("stored vector contains NaN or inf");
        squared += static_cast<double>(row[j]) * row[j];
      }
      if (unit_rows && std::fabs(std::sqrt(squared) - 1.0) > kUnitLengthTolerance) {
        corrupt("stored vector of node " + std::to_string(node) + " is not unit length (metric " +
                metric_name(params.metric) + ")");
      }
    }
    std::size_t live = 0;
    int top_level = -1;
    // The store's label invariant (store.hpp): a label names its latest node and every older
    // node with that label is deleted. Otherwise ids() would list a node find() cannot see.
    std::unordered_map<std::int64_t, std::size_t> latest_node;
    latest_node.reserve(nodes);
    for (std::size_t node = 0; node < nodes; ++node) {
      const std::int64_t label = labels[node];
      if (label < 0 || static_cast<std::uint64_t>(label) >= h.next_label) {
        corrupt("id out of range (node " + std::to_string(node) + ")");
      }
      if (deleted[node] > 1) corrupt("bad deleted flag");
      const auto [slot, first] = latest_node.try_emplace(label, node);
      if (!first) {
        if (deleted[slot->second] == 0) {
          corrupt("id " + std::to_string(label) + " has a live node followed by a newer node");
        }
        slot->second = node;
      }
      if (deleted[node] == 0) ++live;
      top_level = std::max<int>(top_level, levels[node]);
    }
    latest_node = {};
    if (live != h.live_count) corrupt("live count does not match the deleted flags");
    if (top_level != h.max_level) corrupt("max level does not match node levels");
    if (nodes > 0 && levels[h.entry_point] != h.max_level) corrupt("entry point is not on top");
    for (std::uint64_t i = 0; i < level0_padding(h); ++i) {
      if (padding[i] != 0) corrupt("non-zero padding before the level-0 blocks");
    }
    for (std::size_t node = 0; node < nodes; ++node) {
      const std::uint32_t* row = graph.level0_row(static_cast<NodeId>(node));
      if (row[0] > graph.max_degree0()) corrupt("link count out of range");
      for (std::uint32_t i = 1; i <= row[0]; ++i) {
        if (row[i] >= nodes) corrupt("link to a node that does not exist");
      }
      const int level = levels[node];
      const std::uint32_t* upper = graph.upper_rows(static_cast<NodeId>(node));
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
    for (float value : index->rotation_) {
      if (!std::isfinite(value)) corrupt("rotation contains NaN or inf");
    }
    if (int8_codes(h)) {
      for (std::size_t j = 0; j < coded; ++j) {
        if (!std::isfinite(quantizer_offset[j]) || !std::isfinite(quantizer_scale[j]) ||
            !(quantizer_scale[j] > 0.0f)) {
          corrupt("int8 quantizer parameters are not finite and positive");
        }
      }
      index->quantizer_.set_parameters(std::move(quantizer_offset), std::move(quantizer_scale));
      // Codes are a function of the rows and the quantizer: every stored code must be the one
      // this row encodes to, or traversal would rank by vectors other than the ones stored.
      std::vector<std::uint8_t> expected(index->quantizer_.payload_bytes());
      for (std::size_t node = 0; node < nodes; ++node) {
        quant::CodeHeader header;
        index->quantizer_.encode(rows + node * dim, index->code_norm_prefix(), header,
                                 expected.data() + sizeof(header));
        std::memcpy(expected.data(), &header, sizeof(header));
        if (std::memcmp(expected.data(), graph.payload(static_cast<NodeId>(node)),
                        expected.size()) != 0) {
          corrupt("int8 code of node " + std::to_string(node) + " does not match its vector");
        }
      }
    }

    index->store_.restore(std::move(labels), std::move(deleted), h.next_label);
    if (mapping) {
      // Everything was read once to check it; drop those pages from this process (they stay
      // in the page cache) so that resident memory holds only what searches touch, and read
      // rows without readahead: a rerank touches a few rows at random.
      const auto* base = reinterpret_cast<const unsigned char*>(mapping.get());
      const std::size_t size = *source.size();
      const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
      const auto begin = reinterpret_cast<std::uintptr_t>(base) & ~(page - 1);
      ::madvise(reinterpret_cast<void*>(begin),
                size + (reinterpret_cast<std::uintptr_t>(base) - begin), MADV_DONTNEED);
      ::madvise(
          reinterpret_cast<void*>((reinterpret_cast<std::uintptr_t>(base) + rows_at) & ~(page - 1)),
          nodes * dim * sizeof(float), MADV_RANDOM);
      index->mapping_ = std::move(mapping);
    }
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
  const SaveTarget target = resolve_save_target(path);
  const std::string directory = directory_of(target.path);
  const std::string prefix = temporary_prefix(name_of(target.path));
  remove_stale_temporaries(directory, prefix);

  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = read_lock();
  const std::unique_ptr<TemporaryFile> temporary = create_temporary(directory, prefix);
  // A replaced file keeps its permission bits (best effort: some filesystems have none).
  if (target.exists) static_cast<void>(::fchmod(temporary->fd().get(), target.mode & 07777));
  FdSink sink(temporary->fd().get());
  IndexSerializer::write(*this, metadata, sink);
  if (::fsync(temporary->fd().get()) != 0) {
    throw IoError("cannot save to " + shown(path) + ": fsync failed: " + error_text(errno));
  }
  if (temporary->fd().close() != 0) {
    throw IoError("cannot save to " + shown(path) + ": close failed: " + error_text(errno));
  }
  if (std::rename(temporary->path().c_str(), target.path.c_str()) != 0) {
    throw IoError("cannot rename the temporary file onto " + shown(target.path) + ": " +
                  error_text(errno));
  }
  temporary->mark_renamed();
  sync_directory(directory, path);
}

void Index::save_to(ByteSink& sink, const std::string& metadata) const {
  std::lock_guard<std::mutex> writer(writer_mutex_);
  auto lock = read_lock();
  IndexSerializer::write(*this, metadata, sink);
}

std::string Index::to_bytes(const std::string& metadata) const {
  std::string bytes;
  StringSink sink(bytes);
  save_to(sink, metadata);
  return bytes;
}

std::unique_ptr<Index> Index::load_from(ByteSource& source, std::string& metadata) {
  return IndexSerializer::read(source, metadata, nullptr, nullptr);
}

std::unique_ptr<Index> Index::load(const std::string& path, std::string& metadata, bool mapped) {
  std::uint64_t size = 0;
  const FileDescriptor file = open_regular_file(path, size);
  if (!mapped) {
    FdSource source(file.get(), size, path);
    return IndexSerializer::read(source, metadata, nullptr, nullptr);
  }
  if (size == 0) corrupt("file is too short to be a matry index (0 bytes)");
  void* address = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.get(), 0);
  if (address == MAP_FAILED) {
    throw IoError("cannot map " + shown(path) + ": " + error_text(errno));
  }
  std::shared_ptr<void> mapping(address, [size](void* p) { ::munmap(p, size); });
  MemorySource source(static_cast<const unsigned char*>(address), size);
  std::unique_ptr<Index> index =
      IndexSerializer::read(source, metadata, &source, std::move(mapping));
  // The load's checks pulled the whole file into the page cache, and a fault maps the cached
  // pages around it too (fault-around, 64 KB): one rerank would make a whole neighbourhood
  // of rows resident. Drop the rows from the cache, so they come back one page per row a
  // rerank reads. The level-0 blocks, which every search walks, stay cached.
  const std::uint64_t rows_at = kHeaderBytes + metadata.size() + 4;
  const std::uint64_t rows_bytes =
      static_cast<std::uint64_t>(index->node_count()) * index->dim() * sizeof(float);
  static_cast<void>(::posix_fadvise(file.get(), static_cast<off_t>(rows_at),
                                    static_cast<off_t>(rows_bytes), POSIX_FADV_DONTNEED));
  return index;
}

std::unique_ptr<Index> Index::from_bytes(const std::string& bytes, std::string& metadata) {
  return from_buffer(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), metadata);
}

std::unique_ptr<Index> Index::from_buffer(const unsigned char* data, std::size_t size,
                                          std::string& metadata) {
  MemorySource source(data, size);
  return IndexSerializer::read(source, metadata, nullptr, nullptr);
}

const char* quantization_of(const FileHeader& header) {
  return (header.flags & kFlagInt8) != 0 ? "int8" : "none";
}

FileHeader read_header(const std::string& path, std::string& metadata) {
  std::uint64_t size = 0;
  const FileDescriptor file = open_regular_file(path, size);
  std::array<unsigned char, kHeaderBytes> header{};
  read_at(file, path, 0, header.data(), header.size());
  const FileHeader h = decode_header(header.data(), static_cast<std::size_t>(size));
  metadata.assign(h.metadata_bytes, '\0');
  std::uint32_t stored_crc = 0;
  const bool complete =
      read_at(file, path, kHeaderBytes, metadata.data(), metadata.size()) == metadata.size() &&
      read_at(file, path, kHeaderBytes + h.metadata_bytes, &stored_crc, 4) == 4;
  if (!complete) corrupt("file is shorter than its header says (truncated)");
  if (stored_crc != crc32(0, metadata.data(), metadata.size())) {
    corrupt("metadata checksum mismatch");
  }
  return h;
}

}  // namespace matry
