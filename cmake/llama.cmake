# Fetches llama.cpp from the pinned npm package node-llama-cpp, which ships llama.cpp's
# source as a git bundle, verifies the tarball against the pinned registry integrity, and
# adds the llama/ggml targets to this build. The source is cached outside the work tree,
# keyed by commit, so a second configure takes seconds and a changed upstream tarball is
# refused rather than built.
set(HEARTH_NODE_LLAMA_CPP_VERSION "3.22.1")
set(HEARTH_NODE_LLAMA_CPP_INTEGRITY
    "sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw==")
set(HEARTH_LLAMA_COMMIT "de3ff815ea7d559ee917f063901b8986f038abc6")

if(DEFINED ENV{HEARTH_CACHE_DIR})
  set(_cache_root "$ENV{HEARTH_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME})
  set(_cache_root "$ENV{XDG_CACHE_HOME}/hearth")
else()
  set(_cache_root "$ENV{HOME}/.cache/hearth")
endif()
set(HEARTH_LLAMA_SOURCE_DIR "${_cache_root}/llama.cpp-${HEARTH_LLAMA_COMMIT}"
    CACHE PATH "llama.cpp source tree (fetched from the node-llama-cpp bundle)")

if(NOT EXISTS "${HEARTH_LLAMA_SOURCE_DIR}/.hearth-ok")
  find_program(NPM npm REQUIRED)
  find_program(GIT git REQUIRED)
  set(_work "${_cache_root}/fetch-${HEARTH_NODE_LLAMA_CPP_VERSION}")
  file(REMOVE_RECURSE "${_work}")
  file(MAKE_DIRECTORY "${_work}")
  message(STATUS "hearth: npm pack node-llama-cpp@${HEARTH_NODE_LLAMA_CPP_VERSION}")
  execute_process(
    COMMAND "${NPM}" pack "node-llama-cpp@${HEARTH_NODE_LLAMA_CPP_VERSION}" --silent
    WORKING_DIRECTORY "${_work}" RESULT_VARIABLE _rc OUTPUT_QUIET)
  set(_tgz "${_work}/node-llama-cpp-${HEARTH_NODE_LLAMA_CPP_VERSION}.tgz")
  if(NOT _rc EQUAL 0 OR NOT EXISTS "${_tgz}")
    message(FATAL_ERROR "hearth: 'npm pack node-llama-cpp@${HEARTH_NODE_LLAMA_CPP_VERSION}' failed (rc=${_rc}); the npm registry must be reachable for the first build")
  endif()
  # npm's integrity string is base64(sha512(tarball)); compare it with the pinned value.
  execute_process(
    COMMAND sh -c "openssl dgst -sha512 -binary '${_tgz}' | base64 -w0"
    OUTPUT_VARIABLE _digest RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR NOT "sha512-${_digest}" STREQUAL "${HEARTH_NODE_LLAMA_CPP_INTEGRITY}")
    message(FATAL_ERROR "hearth: node-llama-cpp tarball integrity mismatch:\n  got      sha512-${_digest}\n  expected ${HEARTH_NODE_LLAMA_CPP_INTEGRITY}\nRefusing to build an unverified llama.cpp.")
  endif()
  execute_process(
    COMMAND tar xzf "${_tgz}" package/llama/gitRelease.bundle
    WORKING_DIRECTORY "${_work}" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "hearth: the tarball has no package/llama/gitRelease.bundle")
  endif()
  file(REMOVE_RECURSE "${HEARTH_LLAMA_SOURCE_DIR}")
  execute_process(
    COMMAND "${GIT}" clone -q "${_work}/package/llama/gitRelease.bundle" "${HEARTH_LLAMA_SOURCE_DIR}"
    RESULT_VARIABLE _rc)
  if(_rc EQUAL 0)
    execute_process(
      COMMAND "${GIT}" -c advice.detachedHead=false checkout -q "${HEARTH_LLAMA_COMMIT}"
      WORKING_DIRECTORY "${HEARTH_LLAMA_SOURCE_DIR}" RESULT_VARIABLE _rc)
  endif()
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "hearth: could not clone llama.cpp ${HEARTH_LLAMA_COMMIT} from the bundle")
  endif()
  file(TOUCH "${HEARTH_LLAMA_SOURCE_DIR}/.hearth-ok")
  file(REMOVE_RECURSE "${_work}")
endif()

set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)  # json-schema-to-grammar, Jinja chat templates
set(LLAMA_USE_PREBUILT_UI OFF CACHE BOOL "" FORCE)
set(GGML_NATIVE ${HEARTH_NATIVE} CACHE BOOL "" FORCE)
set(GGML_CUDA ${HEARTH_CUDA} CACHE BOOL "" FORCE)
set(BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
add_subdirectory("${HEARTH_LLAMA_SOURCE_DIR}" llama.cpp EXCLUDE_FROM_ALL SYSTEM)
