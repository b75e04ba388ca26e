#include "net/curl_url.h"

#include <algorithm>
#include <cctype>
#include <mutex>
#include <stdexcept>

namespace hearth::net {

void CurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw std::runtime_error("curl_global_init failed");
  });
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string GetUrlPart(CURLU* u, CURLUPart part, unsigned flags) {
  char* v = nullptr;
  if (curl_url_get(u, part, &v, flags) != CURLUE_OK || v == nullptr) return {};
  std::string s(v);
  curl_free(v);
  return s;
}

ParsedUrl ParseUrl(const std::string& url) {
  ParsedUrl p;
  p.url = url;
  p.handle.reset(curl_url());
  if (!p.handle) return p;
  if (curl_url_set(p.handle.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return p;
  p.scheme = Lower(GetUrlPart(p.handle.get(), CURLUPART_SCHEME));
  p.host = Lower(GetUrlPart(p.handle.get(), CURLUPART_HOST));
  const std::string port = GetUrlPart(p.handle.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  const std::string explicit_port = GetUrlPart(p.handle.get(), CURLUPART_PORT);
  const std::string path = GetUrlPart(p.handle.get(), CURLUPART_PATH);
  if ((p.scheme != "http" && p.scheme != "https") || p.host.empty() || port.empty()) return p;
  p.host_port = p.host + ":" + port;
  p.display = p.scheme + "://" + p.host + (explicit_port.empty() ? "" : ":" + explicit_port) + path;
  p.ok = true;
  return p;
}

}  // namespace hearth::net
