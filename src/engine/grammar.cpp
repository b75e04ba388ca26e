#include "engine/grammar.h"

#include "engine/error.h"
#include "json-schema-to-grammar.h"

namespace hearth::engine {

std::string JsonSchemaToGrammar(const std::string& schema_json) {
  try {
    return json_schema_to_grammar(common_json::parse(schema_json));
  } catch (const std::exception& e) {
    throw EngineError(ErrorKind::kInvalidRequest, std::string("the JSON schema cannot be used: ") + e.what());
  }
}

std::string JsonObjectGrammar() {
  static const std::string grammar = JsonSchemaToGrammar(R"({"type": "object"})");
  return grammar;
}

}  // namespace hearth::engine
