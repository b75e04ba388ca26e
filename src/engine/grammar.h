// Output constraints as GBNF grammars for the sampler (SamplingParams::grammar).
#pragma once

#include <string>

namespace hearth::engine {

// Converts a JSON schema (as JSON text) into a GBNF grammar using llama.cpp's converter.
// Throws EngineError(kInvalidRequest) when the text is not JSON or the schema is not
// supported, with the converter's reason.
std::string JsonSchemaToGrammar(const std::string& schema_json);

// A grammar for any JSON object (Ollama's format: "json", OpenAI's json_object).
std::string JsonObjectGrammar();

}  // namespace hearth::engine
