// Shared helpers for the C++ tests: where the real models are, and generated test models.
#pragma once

#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "engine/error.h"
#include "engine/model.h"

namespace hearth::test {

// ../shared/models relative to the project root.
std::string SharedModelsDir();
// Path of ../shared/models/stories260K.gguf, or "" when absent.
std::string StoriesModelPath();
// A fresh directory for this test process (removed at exit).
std::string TempDir();
// A tiny random-weight qwen2 model with the given bundled vocab, generated once per process.
std::string TinyModelPath(const std::string& vocab = "starcoder");
// A tiny random-weight model whose chat template can call tools: Qwen2.5-Instruct's (bundled
// with llama.cpp) over the qwen2 vocab. Generated once per process.
std::string ToolModelPath();
// Runs fn and returns the EngineError it throws; a test failure (and a kInternal error) when it
// throws none.
engine::EngineError CatchEngineError(const std::function<void()>& fn);

}  // namespace hearth::test

// Skips the current test with a message when the real trained model is absent.
#define HEARTH_REQUIRE_STORIES(path_var)                                                   \
  std::string path_var = ::hearth::test::StoriesModelPath();                              \
  if (path_var.empty()) GTEST_SKIP() << "../shared/models/stories260K.gguf is absent; " \
                                        "skipping the test that needs the real model"
