// Engine errors. Every failure the engine reports is an EngineError with a kind that the
// HTTP layer maps to a status code, and a message that tells the caller what to fix.
#pragma once

#include <stdexcept>
#include <string>

namespace hearth::engine {

enum class ErrorKind {
  kInvalidModel,     // the file is missing, truncated, not GGUF, or malformed
  kInvalidRequest,   // a parameter is out of range or inconsistent
  kContextOverflow,  // the prompt does not fit the context window
  kOverloaded,       // the request queue is full; retry later
  kInsufficientMemory,  // the model does not fit in the memory left (message has the numbers)
  kUnsupported,      // the model cannot do this (e.g. FIM without FIM tokens)
  kNotFound,         // no model of that name is known
  kDenied,           // the routing policy forbids this request
  kInternal,         // llama.cpp failed in a way the caller cannot fix
};

class EngineError : public std::runtime_error {
 public:
  EngineError(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace hearth::engine
