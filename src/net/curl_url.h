// libcurl helpers shared by the two components that connect out of the machine: the
// gateway's egress (src/router/egress.cpp) and the model puller (src/store/pull.cpp). Both
// check a URL's host against an allowlist, so both must parse URLs exactly as libcurl does.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <string>
#include <string_view>

namespace hearth::net {

// curl_global_init, once per process. Throws std::runtime_error when it fails.
void CurlGlobalInit();

std::string Lower(std::string s);      // ASCII lower case
std::string Trim(std::string_view s);  // without leading and trailing white space

struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using CurlUrlPtr = std::unique_ptr<CURLU, CurlUrlDeleter>;

// One part of a parsed URL ("" when it has none).
std::string GetUrlPart(CURLU* u, CURLUPart part, unsigned flags = 0);

// A URL as libcurl itself parses it. Hand `handle` to the transfer (CURLOPT_CURLU): the host
// checked against an allowlist is then exactly the host libcurl connects to.
struct ParsedUrl {
  bool ok = false;        // an http or https URL with a host
  CurlUrlPtr handle;
  std::string url;        // as given
  std::string scheme;     // "http" / "https"
  std::string host;       // lower case; IPv6 in brackets
  std::string host_port;  // host:effective port (explicit or the scheme's default)
  std::string display;    // scheme://host[:port]/path: no user info, query or fragment
};
ParsedUrl ParseUrl(const std::string& url);

}  // namespace hearth::net
