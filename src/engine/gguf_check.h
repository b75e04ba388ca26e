// Structural validation of an untrusted GGUF file before llama.cpp sees it.
//
// llama.cpp's loader trusts much of what a file says; a crafted or corrupt file can make it
// allocate absurd amounts or abort. CheckGgufFile reads the header, every metadata key/value,
// and the tensor table with bounded reads, and verifies: magic and version, counts that fit
// the file, string and array lengths inside the file, known value and tensor types, sane
// tensor ranks and dimensions, tensor data offsets aligned and with the whole tensor inside
// the file. It never aborts and never allocates more than the file could justify.
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>

namespace hearth::engine {

struct GgufSummary {
  uint32_t version = 0;
  uint64_t tensor_count = 0;
  uint64_t metadata_count = 0;
  uint64_t file_size = 0;
  uint64_t tensor_data_bytes = 0;  // sum of all tensor sizes
  std::string architecture;        // general.architecture, empty if absent
  // Strings in metadata arrays (tokenizer tokens and merges): the memory planner sizes the
  // tokenizer's tables from them.
  uint64_t string_array_elements = 0;
  uint64_t string_array_bytes = 0;
};

// Returns the summary, or throws EngineError(kInvalidModel) whose message names the file,
// the offending field and what was wrong (e.g. "tensor 'blk.0.attn_q.weight' data
// [offset 123, size 456] lies outside the file (size 400)").
GgufSummary CheckGgufFile(const std::string& path);

// Same checks over an in-memory image (used by the fuzz target and tests).
GgufSummary CheckGgufBuffer(const uint8_t* data, size_t size, const std::string& name);

}  // namespace hearth::engine
