// The model store over HTTP, Ollama-shaped: POST /api/pull, POST /api/create,
// DELETE /api/delete, POST /api/copy (docs/store.md). Pull and create stream NDJSON progress
// ({status, digest, total, completed} ... {status: "success"}) unless "stream": false.
// None of these paths is public: when the server has an API key, they require it.
#pragma once

#include "api/api_common.h"

namespace hearth::store {
class Store;
}
namespace hearth::engine {
class ModelPool;
}

namespace hearth::api {

// Adds the store routes. With a pool, models that are pulled, created or copied are
// registered with it at once (servable without a restart) and deleted ones are unloaded.
// store and pool must outlive the routes.
void AddStoreRoutes(RouteTable& routes, store::Store& store, engine::ModelPool* pool_or_null);

}  // namespace hearth::api
