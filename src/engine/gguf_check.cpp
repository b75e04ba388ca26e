// Structural GGUF validation with bounded reads. See gguf_check.h.
//
// The layout checked here is the one ggml/src/gguf.cpp (llama.cpp de3ff815) reads:
//   magic "GGUF" | u32 version | i64 n_tensors | i64 n_kv
//   n_kv x { str key | i32 type | value }        value: scalar, str, or
//                                                  { i32 elem_type | u64 n | n x elem }
//   n_tensors x { str name | u32 n_dims | n_dims x i64 ne | i32 ggml_type | u64 offset }
//   padding to general.alignment (u32, default 32) | tensor data
// where str is { u64 length | bytes } and everything is little-endian.
//
// The validator is self-contained: it needs ggml.h only for the enum values it checks its own
// type table against (static_asserts below), links nothing from ggml, and so also builds in
// the clang/libFuzzer build (fuzz/). It is at least as strict as ggml's reader (anything that
// passes here also passes gguf_init_from_file; tests/gguf_check_test.cpp checks that), and
// stricter where ggml trusts the file more than a server should: tighter string and array
// caps, no zero-sized dimensions, tensor data bounds-checked against the file size, and no
// overlapping tensor data.

#include "engine/gguf_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "engine/error.h"
#include "ggml.h"

namespace hearth::engine {
namespace {

// ---- format constants ---------------------------------------------------------------------

constexpr uint32_t kMinVersion = 2;   // GGUFv1 (32-bit counts) is no longer readable by ggml
constexpr uint32_t kMaxVersion = 3;   // GGUF_VERSION in this llama.cpp
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
constexpr uint64_t kDefaultAlignment = 32;  // GGUF_DEFAULT_ALIGNMENT

constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint64_t kMaxValueStringBytes = 64ull << 20;     // 64 MiB per string value
constexpr uint64_t kMaxArrayElements = 1ull << 30;         // GGUF_MAX_ARRAY_ELEMENTS in ggml
constexpr uint64_t kMaxTensorNameBytes = GGML_MAX_NAME - 1;  // ggml rejects length >= 64
constexpr uint32_t kMaxDims = GGML_MAX_DIMS;

// Smallest possible encodings, used to bound the counts in the header by the file size.
// A key/value: key length (8) + 1-byte key + type (4) + 1-byte value (u8/i8/bool).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
// A tensor info: name length (8) + 1-byte name + n_dims (4) + one dim (8) + type (4) + offset (8).
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

// gguf_type
enum ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12, kValueTypeCount = 13,
};

const char* ValueTypeName(uint32_t t) {
  static constexpr const char* kNames[kValueTypeCount] = {
      "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64"};
  return t < kValueTypeCount ? kNames[t] : "unknown";
}

// Size of a fixed-size value type; 0 for string/array.
uint64_t ValueTypeSize(uint32_t t) {
  static constexpr uint8_t kSizes[kValueTypeCount] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return t < kValueTypeCount ? kSizes[t] : 0;
}

// ggml tensor types of llama.cpp de3ff815: block size (elements per block) and type size
// (bytes per block), as ggml_blck_size/ggml_type_size report them. block 0 = removed type.
struct TensorType {
  const char* name;
  uint32_t block;
  uint32_t bytes;
};
constexpr TensorType kTensorTypes[] = {
    /* 0 */ {"F32", 1, 4},         /* 1 */ {"F16", 1, 2},
    /* 2 */ {"Q4_0", 32, 18},      /* 3 */ {"Q4_1", 32, 20},
    /* 4 */ {"Q4_2", 0, 0},        /* 5 */ {"Q4_3", 0, 0},
    /* 6 */ {"Q5_0", 32, 22},      /* 7 */ {"Q5_1", 32, 24},
    /* 8 */ {"Q8_0", 32, 34},      /* 9 */ {"Q8_1", 32, 36},
    /* 10 */ {"Q2_K", 256, 84},    /* 11 */ {"Q3_K", 256, 110},
    /* 12 */ {"Q4_K", 256, 144},   /* 13 */ {"Q5_K", 256, 176},
    /* 14 */ {"Q6_K", 256, 210},   /* 15 */ {"Q8_K", 256, 292},
    /* 16 */ {"IQ2_XXS", 256, 66}, /* 17 */ {"IQ2_XS", 256, 74},
    /* 18 */ {"IQ3_XXS", 256, 98}, /* 19 */ {"IQ1_S", 256, 50},
    /* 20 */ {"IQ4_NL", 32, 18},   /* 21 */ {"IQ3_S", 256, 110},
    /* 22 */ {"IQ2_S", 256, 82},   /* 23 */ {"IQ4_XS", 256, 136},
    /* 24 */ {"I8", 1, 1},         /* 25 */ {"I16", 1, 2},
    /* 26 */ {"I32", 1, 4},        /* 27 */ {"I64", 1, 8},
    /* 28 */ {"F64", 1, 8},        /* 29 */ {"IQ1_M", 256, 56},
    /* 30 */ {"BF16", 1, 2},       /* 31 */ {"Q4_0_4_4", 0, 0},
    /* 32 */ {"Q4_0_4_8", 0, 0},   /* 33 */ {"Q4_0_8_8", 0, 0},
    /* 34 */ {"TQ1_0", 256, 54},   /* 35 */ {"TQ2_0", 256, 66},
    /* 36 */ {"IQ4_NL_4_4", 0, 0}, /* 37 */ {"IQ4_NL_4_8", 0, 0},
    /* 38 */ {"IQ4_NL_8_8", 0, 0}, /* 39 */ {"MXFP4", 32, 17},
    /* 40 */ {"NVFP4", 64, 36},    /* 41 */ {"Q1_0", 128, 18},
    /* 42 */ {"Q2_0", 64, 18},
};
constexpr uint32_t kTensorTypeCount = sizeof(kTensorTypes) / sizeof(kTensorTypes[0]);
// If llama.cpp is upgraded and ggml gains or renumbers types, these fail and the table above
// must be updated from ggml_get_type_traits (tests/gguf_check_test.cpp cross-checks sizes).
static_assert(kTensorTypeCount == GGML_TYPE_COUNT, "update kTensorTypes from ggml.h");
static_assert(GGML_TYPE_BF16 == 30 && GGML_TYPE_TQ1_0 == 34 && GGML_TYPE_MXFP4 == 39 &&
                  GGML_TYPE_NVFP4 == 40 && GGML_TYPE_Q1_0 == 41 && GGML_TYPE_Q2_0 == 42,
              "update kTensorTypes from ggml.h");

// ---- helpers ------------------------------------------------------------------------------

std::string Num(uint64_t v) { return std::to_string(v); }

// Untrusted bytes (keys, tensor names) made safe to put in an error message.
std::string Printable(std::string_view s) {
  static constexpr size_t kMax = 80;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Rounds v up to a multiple of align (a power of two); false on overflow.
bool PadTo(uint64_t v, uint64_t align, uint64_t* out) {
  uint64_t sum = 0;
  if (__builtin_add_overflow(v, align - 1, &sum)) return false;
  *out = sum & ~(align - 1);
  return true;
}

// ---- byte sources -------------------------------------------------------------------------

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Copies [offset, offset + n) into dst; the caller has checked offset + n <= size.
  virtual void ReadAt(uint64_t offset, void* dst, size_t n) = 0;
};

class BufferSource final : public ByteSource {
 public:
  explicit BufferSource(const uint8_t* data) : data_(data) {}
  void ReadAt(uint64_t offset, void* dst, size_t n) override {
    if (n != 0) std::memcpy(dst, data_ + offset, n);
  }

 private:
  const uint8_t* data_;
};

// pread through a small window, so the many small reads of a large vocabulary cost few
// syscalls. Only the bytes the checker asks for are read; tensor data never is.
class FileSource final : public ByteSource {
 public:
  FileSource(int fd, uint64_t size, const std::string& path) : fd_(fd), size_(size), path_(path) {}

  void ReadAt(uint64_t offset, void* dst, size_t n) override {
    if (n == 0) return;
    if (offset >= window_offset_ && offset - window_offset_ <= window_.size() &&
        n <= window_.size() - (offset - window_offset_)) {
      std::memcpy(dst, window_.data() + (offset - window_offset_), n);
      return;
    }
    if (n > kWindowBytes) {
      ReadFully(offset, static_cast<uint8_t*>(dst), n);
      return;
    }
    const uint64_t len = std::min<uint64_t>(kWindowBytes, size_ - offset);
    window_.resize(static_cast<size_t>(len));
    window_offset_ = offset;
    ReadFully(offset, window_.data(), window_.size());
    std::memcpy(dst, window_.data(), n);
  }

 private:
  static constexpr size_t kWindowBytes = 1 << 20;

  void ReadFully(uint64_t offset, uint8_t* dst, size_t n) {
    while (n > 0) {
      const ssize_t got = ::pread(fd_, dst, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        throw EngineError(ErrorKind::kInvalidModel, "model file '" + path_ +
                                                        "' could not be read at offset " +
                                                        Num(offset) + ": " + std::strerror(errno));
      }
      if (got == 0) {
        window_.clear();
        throw EngineError(ErrorKind::kInvalidModel,
                          "model file '" + path_ + "' is truncated: it became shorter (at offset " +
                              Num(offset) + ") while it was being checked; it is not a valid " +
                              "GGUF model in its current state");
      }
      dst += got;
      offset += static_cast<uint64_t>(got);
      n -= static_cast<size_t>(got);
    }
  }

  int fd_;
  uint64_t size_;
  const std::string& path_;
  std::vector<uint8_t> window_;
  uint64_t window_offset_ = 0;
};

// ---- the checker --------------------------------------------------------------------------

struct TensorRecord {
  std::string name;
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

class Checker {
 public:
  Checker(ByteSource& src, uint64_t size, const std::string& name)
      : src_(src), size_(size), name_(name) {}

  GgufSummary Run() {
    GgufSummary summary;
    summary.file_size = size_;
    CheckMagic();
    summary.version = ReadVersion();
    const uint64_t n_tensors = U64("tensor count");
    const uint64_t n_kv = U64("metadata key count");
    CheckCounts(n_tensors, n_kv);
    summary.tensor_count = n_tensors;
    summary.metadata_count = n_kv;

    std::unordered_set<std::string> keys;
    for (uint64_t i = 0; i < n_kv; ++i) ReadKeyValue(i, &keys, &summary);

    std::vector<TensorRecord> tensors;
    tensors.reserve(static_cast<size_t>(std::min<uint64_t>(n_tensors, 4096)));
    std::unordered_set<std::string> names;
    for (uint64_t i = 0; i < n_tensors; ++i) tensors.push_back(ReadTensorInfo(i, &names));

    summary.tensor_data_bytes = CheckTensorData(tensors);
    return summary;
  }

 private:
  enum class Section { kHeader, kKey, kTensor };

  // ---- error reporting ----

  [[noreturn]] void Fail(const std::string& detail) const {
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + name_ + "' is not a valid GGUF model: " + detail);
  }

  std::string Item() const {
    switch (section_) {
      case Section::kHeader: return "the header";
      case Section::kKey:
        return "metadata key #" + Num(index_) +
               (item_name_.empty() ? std::string() : " '" + Printable(item_name_) + "'");
      case Section::kTensor:
        return "tensor #" + Num(index_) +
               (item_name_.empty() ? std::string() : " '" + Printable(item_name_) + "'");
    }
    return "the file";
  }

  // Throws unless n more bytes are available at the current position.
  void Need(uint64_t n, const char* field) const {
    if (n > size_ - pos_) {
      Fail("the file is truncated: " + Item() + " " + field + " needs " + Num(n) +
           " bytes at offset " + Num(pos_) + " but the file has " + Num(size_) + " bytes");
    }
  }

  void Read(void* dst, size_t n, const char* field) {
    Need(n, field);
    src_.ReadAt(pos_, dst, n);
    pos_ += n;
  }

  void Skip(uint64_t n, const char* field) {
    Need(n, field);
    pos_ += n;
  }

  uint32_t U32(const char* field) {
    uint8_t b[4];
    Read(b, sizeof b, field);
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  }

  uint64_t U64(const char* field) {
    uint8_t b[8];
    Read(b, sizeof b, field);
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | b[i];
    return v;
  }

  std::string Bytes(uint64_t n, const char* field) {
    Need(n, field);
    std::string s(static_cast<size_t>(n), '\0');
    src_.ReadAt(pos_, s.data(), s.size());
    pos_ += n;
    return s;
  }

  // ---- header ----

  void CheckMagic() {
    if (size_ == 0) Fail("the file is empty (0 bytes); expected the magic 'GGUF'");
    uint8_t magic[4] = {0, 0, 0, 0};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(4, size_));
    src_.ReadAt(0, magic, n);
    if (std::memcmp(magic, "GGUF", n) != 0) {
      std::string shown;
      std::string hex;
      static constexpr char kHex[] = "0123456789abcdef";
      for (size_t i = 0; i < n; ++i) {
        const unsigned char c = magic[i];
        shown += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
        if (!hex.empty()) hex += ' ';
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
      }
      std::string hint;
      if (n == 4 && (std::memcmp(magic, "lmgg", 4) == 0 || std::memcmp(magic, "fmgg", 4) == 0 ||
                     std::memcmp(magic, "tjgg", 4) == 0 || std::memcmp(magic, "algg", 4) == 0)) {
        hint = " (this looks like a legacy GGML/GGJT model; convert it to GGUF)";
      } else if (n == 4 && std::memcmp(magic, "FUGG", 4) == 0) {
        hint = " (this looks like a big-endian GGUF file; only little-endian files are supported)";
      }
      Fail("bad magic: the file starts with '" + shown + "' (" + hex + "), expected 'GGUF'" +
           hint);
    }
    if (size_ < 4) {
      Fail("the file is truncated: the magic needs 4 bytes but the file has " + Num(size_) +
           " bytes");
    }
    pos_ = 4;
  }

  uint32_t ReadVersion() {
    const uint32_t v = U32("version");
    if (v == 1) {
      Fail("GGUF version 1 is no longer supported; re-convert the model with a current "
           "llama.cpp (supported versions: 2 and 3)");
    }
    if (v != 0 && (v & 0xFFFF) == 0) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", v);
      Fail("GGUF version field is " + Num(v) + " (" + hex +
           "), which looks like a big-endian file; only little-endian GGUF files "
           "(version 2 or 3) are supported");
    }
    if (v < kMinVersion || v > kMaxVersion) {
      Fail("unsupported GGUF version " + Num(v) + " (supported versions: 2 and 3)");
    }
    return v;
  }

  void CheckCounts(uint64_t n_tensors, uint64_t n_kv) const {
    const uint64_t room = size_ - kHeaderBytes;  // the header was read, so size_ >= 24
    const std::string tail = " bytes follow the header (file size " + Num(size_) +
                             "): the file is truncated or the count is corrupt";
    if (n_tensors > room / kMinTensorInfoBytes) {
      Fail("implausible tensor count " + Num(n_tensors) + ": each tensor entry takes at least " +
           Num(kMinTensorInfoBytes) + " bytes but only " + Num(room) + tail);
    }
    if (n_kv > room / kMinKvBytes) {
      Fail("implausible metadata key count " + Num(n_kv) + ": each key/value entry takes at " +
           "least " + Num(kMinKvBytes) + " bytes but only " + Num(room) + tail);
    }
    // Both products are bounded by room now, so the sum cannot overflow.
    const uint64_t min_bytes = n_tensors * kMinTensorInfoBytes + n_kv * kMinKvBytes;
    if (min_bytes > room) {
      Fail("implausible counts: " + Num(n_tensors) + " tensors and " + Num(n_kv) +
           " metadata keys need at least " + Num(min_bytes) + " bytes but only " + Num(room) +
           tail);
    }
  }

  // ---- metadata ----

  void ReadKeyValue(uint64_t i, std::unordered_set<std::string>* keys, GgufSummary* summary) {
    section_ = Section::kKey;
    index_ = i;
    item_name_.clear();

    const uint64_t key_len = U64("key length");
    if (key_len == 0) Fail(Item() + " has an empty key");
    if (key_len > kMaxKeyBytes) {
      Fail(Item() + " has key length " + Num(key_len) + ", over the limit of " +
           Num(kMaxKeyBytes) + " bytes");
    }
    std::string key = Bytes(key_len, "key");
    item_name_ = key;
    if (key.find('\0') != std::string::npos) Fail(Item() + " contains a NUL byte in its key");
    if (!keys->insert(key).second) Fail(Item() + " is a duplicate key");

    const uint32_t type = U32("value type");
    const bool is_alignment = key == "general.alignment";
    const bool is_architecture = key == "general.architecture";

    if (type == kArray) {
      const uint32_t elem = U32("array element type");
      if (elem == kArray) Fail(Item() + " is a nested array, which GGUF does not support");
      if (elem >= kValueTypeCount) {
        Fail(Item() + " has an array of unknown value type " +
             std::to_string(static_cast<int32_t>(elem)) + " (valid types are 0..12)");
      }
      if (is_alignment || is_architecture) {
        Fail(Item() + " must be a " + (is_alignment ? "u32" : "string") + " but is an array");
      }
      const uint64_t n = U64("array length");
      if (n > kMaxArrayElements) {
        Fail(Item() + " has array length " + Num(n) + ", over the limit of " +
             Num(kMaxArrayElements) + " elements");
      }
      if (elem == kString) {
        Need(n * 8, "array of strings");  // n <= 2^30: no overflow
        for (uint64_t j = 0; j < n; ++j) {
          const uint64_t len = U64("array string length");
          if (len > kMaxValueStringBytes) {
            Fail(Item() + " array element #" + Num(j) + " has string length " + Num(len) +
                 ", over the limit of " + Num(kMaxValueStringBytes) + " bytes");
          }
          Skip(len, "array string");
          summary->string_array_bytes += len;
        }
        summary->string_array_elements += n;
      } else {
        Skip(n * ValueTypeSize(elem), "array data");  // <= 2^33: no overflow
      }
      return;
    }

    if (type >= kValueTypeCount) {
      Fail(Item() + " has unknown value type " + std::to_string(static_cast<int32_t>(type)) +
           " (valid types are 0..12)");
    }
    if (is_alignment && type != kU32) {
      Fail(Item() + " must be of type u32 but is " + ValueTypeName(type));
    }
    if (is_architecture && type != kString) {
      Fail(Item() + " must be of type string but is " + ValueTypeName(type));
    }

    if (type == kString) {
      const uint64_t len = U64("string length");
      if (len > kMaxValueStringBytes) {
        Fail(Item() + " has string length " + Num(len) + ", over the limit of " +
             Num(kMaxValueStringBytes) + " bytes");
      }
      if (is_architecture) {
        summary->architecture = Bytes(len, "string");
      } else {
        Skip(len, "string");
      }
      return;
    }

    if (is_alignment) {
      const uint32_t align = U32("value");
      if (!IsPowerOfTwo(align)) {
        Fail(Item() + " is " + Num(align) + ", but the alignment must be a nonzero power of two");
      }
      alignment_ = align;
      return;
    }
    Skip(ValueTypeSize(type), "value");
  }

  // ---- tensor table ----

  TensorRecord ReadTensorInfo(uint64_t i, std::unordered_set<std::string>* names) {
    section_ = Section::kTensor;
    index_ = i;
    item_name_.clear();

    const uint64_t name_len = U64("name length");
    if (name_len == 0) Fail(Item() + " has an empty name");
    if (name_len > kMaxTensorNameBytes) {
      Fail(Item() + " has name length " + Num(name_len) + ", over ggml's limit of " +
           Num(kMaxTensorNameBytes) + " bytes");
    }
    TensorRecord rec;
    rec.name = Bytes(name_len, "name");
    item_name_ = rec.name;
    if (rec.name.find('\0') != std::string::npos) Fail(Item() + " has a NUL byte in its name");
    if (!names->insert(rec.name).second) Fail(Item() + " has a duplicate tensor name");

    const uint32_t n_dims = U32("dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) {
      Fail(Item() + " has " + Num(n_dims) + " dimensions; 1 to " + Num(kMaxDims) +
           " are allowed");
    }
    int64_t ne[kMaxDims] = {1, 1, 1, 1};
    for (uint32_t d = 0; d < n_dims; ++d) {
      ne[d] = static_cast<int64_t>(U64("dimension"));
      if (ne[d] < 1) {
        Fail(Item() + " dimension " + Num(d) + " is " + std::to_string(ne[d]) +
             "; every dimension must be at least 1");
      }
    }
    int64_t n_elements = 1;
    for (uint32_t d = 0; d < kMaxDims; ++d) {
      if (__builtin_mul_overflow(n_elements, ne[d], &n_elements)) {
        Fail(Item() + " has dimensions [" + Dims(ne, n_dims) +
             "] whose element count overflows 64 bits");
      }
    }

    const uint32_t type = U32("type");
    if (type >= kTensorTypeCount) {
      Fail(Item() + " has unknown tensor type " + std::to_string(static_cast<int32_t>(type)) +
           " (ggml knows types 0.." + Num(kTensorTypeCount - 1) + ")");
    }
    const TensorType& tt = kTensorTypes[type];
    if (tt.block == 0) {
      Fail(Item() + " has tensor type " + Num(type) + " (" + tt.name +
           "), which ggml no longer supports in GGUF files; re-convert the model");
    }
    if (ne[0] % tt.block != 0) {
      Fail(Item() + " of type " + tt.name + " has " + std::to_string(ne[0]) +
           " elements per row, not a multiple of the block size " + Num(tt.block));
    }
    // n_elements / block is exact because ne[0] is a multiple of block.
    if (__builtin_mul_overflow(static_cast<uint64_t>(n_elements) / tt.block, uint64_t{tt.bytes},
                               &rec.bytes)) {
      Fail(Item() + " has dimensions [" + Dims(ne, n_dims) + "] whose size in bytes overflows");
    }
    rec.offset = U64("data offset");
    return rec;
  }

  static std::string Dims(const int64_t* ne, uint32_t n_dims) {
    std::string s;
    for (uint32_t d = 0; d < n_dims; ++d) s += (d ? ", " : "") + std::to_string(ne[d]);
    return s;
  }

  // ---- tensor data ----

  std::string TensorItem(const std::vector<TensorRecord>& t, size_t i) const {
    return "tensor #" + Num(i) + " '" + Printable(t[i].name) + "'";
  }

  uint64_t CheckTensorData(const std::vector<TensorRecord>& t) {
    if (t.empty()) return 0;
    const uint64_t info_end = pos_;
    uint64_t data_start = 0;
    if (!PadTo(info_end, alignment_, &data_start) || data_start > size_) {
      Fail("the file is truncated: the tensor data section starts after the tensor table "
           "(which ends at offset " + Num(info_end) + "), padded to the " + Num(alignment_) +
           "-byte alignment, but the file has " + Num(size_) + " bytes");
    }
    const uint64_t data_size = size_ - data_start;

    uint64_t total = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].offset % alignment_ != 0) {
        Fail(TensorItem(t, i) + " has data offset " + Num(t[i].offset) +
             ", which is not a multiple of the alignment " + Num(alignment_));
      }
      if (t[i].offset > data_size || t[i].bytes > data_size - t[i].offset) {
        Fail(TensorItem(t, i) + " data [offset " + Num(t[i].offset) + ", size " +
             Num(t[i].bytes) + "] lies outside the file: the data section starts at offset " +
             Num(data_start) + " and holds " + Num(data_size) + " bytes (file size " +
             Num(size_) + "); the file is truncated or corrupt");
      }
      total += t[i].bytes;  // each <= data_size and disjoint (checked below): no overflow
    }

    std::vector<size_t> order(t.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return t[a].offset != t[b].offset ? t[a].offset < t[b].offset : a < b;
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const TensorRecord& prev = t[order[k - 1]];
      const TensorRecord& cur = t[order[k]];
      if (prev.offset + prev.bytes > cur.offset) {
        Fail(TensorItem(t, order[k - 1]) + " data [offset " + Num(prev.offset) + ", size " +
             Num(prev.bytes) + "] overlaps " + TensorItem(t, order[k]) + " data [offset " +
             Num(cur.offset) + ", size " + Num(cur.bytes) + "]");
      }
    }

    // ggml's reader also requires the data to be laid out in table order, each tensor padded
    // to the alignment, with no gaps (gguf.cpp: "tensor has offset X, expected Y").
    uint64_t expected = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (t[i].offset != expected) {
        Fail(TensorItem(t, i) + " has data offset " + Num(t[i].offset) + " but " +
             Num(expected) + " was expected: ggml requires tensor data in table order, each " +
             "tensor padded to the " + Num(alignment_) + "-byte alignment, without gaps");
      }
      uint64_t padded = 0;
      // offset + bytes <= data_size (checked above), so this cannot overflow in practice.
      if (!PadTo(t[i].bytes, alignment_, &padded) ||
          __builtin_add_overflow(expected, padded, &expected)) {
        Fail(TensorItem(t, i) + " size overflows when padded to the alignment");
      }
    }
    return total;
  }

  ByteSource& src_;
  const uint64_t size_;
  const std::string& name_;
  uint64_t pos_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  Section section_ = Section::kHeader;
  uint64_t index_ = 0;
  std::string item_name_;
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

GgufSummary CheckGgufBuffer(const uint8_t* data, size_t size, const std::string& name) {
  static const uint8_t kEmpty = 0;
  BufferSource src(data != nullptr ? data : &kEmpty);
  return Checker(src, data != nullptr ? size : 0, name).Run();
}

GgufSummary CheckGgufFile(const std::string& path) {
  int raw = -1;
  do {
    raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) {
    const int err = errno;
    if (err == ENOENT) {
      throw EngineError(ErrorKind::kInvalidModel, "model file '" + path + "' does not exist");
    }
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + path + "' cannot be opened: " + std::strerror(err));
  }
  Fd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + path + "' cannot be inspected: " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    throw EngineError(ErrorKind::kInvalidModel,
                      "model file '" + path + "' is a directory, not a GGUF model file");
  }
  if (!S_ISREG(st.st_mode)) {
    throw EngineError(ErrorKind::kInvalidModel, "model file '" + path +
                                                    "' is not a regular file, so it is not a "
                                                    "valid GGUF model");
  }
  FileSource src(fd.get(), static_cast<uint64_t>(st.st_size), path);
  return Checker(src, static_cast<uint64_t>(st.st_size), path).Run();
}

}  // namespace hearth::engine
