// Facts the policy decides on, derived from a request: its task class, predicted output
// length, and the file paths it names. Pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "router/policy.h"
#include "router/request.h"

namespace hearth::router {

// Infill is autocomplete; chat is refined by the last user message ("explain ...",
// "refactor ...") unless the client says X-Hearth-Task.
TaskClass ClassifyTask(const InferenceRequest& request);

// The requested max_tokens when given, else a typical length for the task class
// (autocomplete 64, chat 200, edit 350, explain 550 tokens).
int32_t PredictOutputTokens(const InferenceRequest& request, TaskClass task);

// Paths named in the request: FIM file names, X-Hearth-Paths, and path-like words in the
// text (a '/' or a file extension), deduplicated.
std::vector<std::string> PathsNamed(const InferenceRequest& request);

// Every piece of text that would be sent (prompt, system, messages, FIM parts).
std::vector<std::string_view> RequestTexts(const InferenceRequest& request);  // views into request

}  // namespace hearth::router
