#include "router/scanner.h"

#include <hs/hs.h>

#if defined(__AVX512BW__) && !defined(HEARTH_SCANNER_NO_SIMD)
#include <immintrin.h>
#elif defined(__SSE2__) && !defined(HEARTH_SCANNER_NO_SIMD)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

namespace hearth::router {

std::string_view ToString(FindingKind kind) {
  switch (kind) {
    case FindingKind::kSecret: return "secret";
    case FindingKind::kPersonalData: return "personal_data";
    case FindingKind::kCustom: return "custom";
  }
  return "custom";
}

namespace {

// ---------------------------------------------------------------------------------------------
// Character classes (ASCII only: every built-in pattern is ASCII, and text need not be UTF-8).

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsAlpha(char c) { return IsUpper(c) || IsLower(c); }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }
bool IsWord(char c) { return IsAlnum(c) || c == '_'; }
bool IsB64Url(char c) { return IsWord(c) || c == '-'; }
bool IsTokenChar(char c) { return IsB64Url(c) || c == '+' || c == '/'; }  // base64 or base64url
bool IsHexOrDash(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '-'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }
bool IsSpace(char c) { return IsBlank(c) || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsQuote(char c) { return c == '"' || c == '\'' || c == '`'; }
bool IsUpperOrDigit(char c) { return IsUpper(c) || IsDigit(c); }
bool IsAlnumOrDash(char c) { return IsAlnum(c) || c == '-'; }
char ToLower(char c) { return IsUpper(c) ? static_cast<char>(c - 'A' + 'a') : c; }

std::string Lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ToLower(c);
  return out;
}

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// ---------------------------------------------------------------------------------------------
// What a confirmation decided about one report: a Vectorscan match end, or a place the
// prefilter pointed at.

struct Verdict {
  bool found = false;
  size_t begin = 0, end = 0;
  // Later reports of the same trigger that end at or before this offset cannot yield anything
  // new (they are inside the candidate just examined), so they are skipped.
  size_t resume = 0;
  size_t rule = SIZE_MAX;  // set when the finding belongs to another rule than the trigger's
};

Verdict Reject(size_t resume) { return Verdict{false, 0, 0, resume}; }
Verdict Accept(size_t begin, size_t end) { return Verdict{true, begin, end, end}; }

using Confirm = std::function<Verdict(std::string_view text, size_t end)>;

// ---------------------------------------------------------------------------------------------
// Vendor tokens with a fixed prefix: the report is the end of the prefix, so the token starts
// trigger_len (the prefix's length) before it; the body then extends to its full length.

struct TokenShape {
  size_t trigger_len;
  bool (*body)(char);
  size_t min_len, max_len;  // whole token, prefix included
  bool (*extra)(std::string_view token) = nullptr;
};

Verdict ConfirmToken(std::string_view t, size_t end, const TokenShape& s) {
  if (end < s.trigger_len) return Reject(end);
  size_t b = end - s.trigger_len, e = end;
  while (e < t.size() && s.body(t[e])) ++e;
  size_t len = e - b;
  if (len < s.min_len || len > s.max_len) return Reject(e);
  if ((e < t.size() && IsWord(t[e])) || (b > 0 && IsWord(t[b - 1]))) return Reject(e);
  if (s.extra != nullptr && !s.extra(t.substr(b, len))) return Reject(e);
  return Accept(b, e);
}

// "sk-" is a short, generic prefix: require what random keys have (all three classes), and leave
// Anthropic's "sk-ant-" to its own rule.
bool LooksLikeOpenAiKey(std::string_view token) {
  if (StartsWith(token, "sk-ant-")) return false;
  bool upper = false, lower = false, digit = false;
  for (char c : token.substr(3)) {
    upper |= IsUpper(c);
    lower |= IsLower(c);
    digit |= IsDigit(c);
  }
  return upper && lower && digit;
}

// ---------------------------------------------------------------------------------------------
// Private keys: the whole PEM block, BEGIN through END. Without an END (a truncated paste), the
// base64 body that follows the header.

Verdict ConfirmPrivateKey(std::string_view t, size_t end) {
  size_t window = end > 96 ? end - 96 : 0;
  size_t b = t.rfind("-----BEGIN", end);
  if (b == std::string_view::npos || b < window) return Reject(end);
  size_t search_limit = std::min(t.size(), end + 65536);
  size_t end_marker = t.substr(0, search_limit).find("-----END", end);
  if (end_marker != std::string_view::npos) {
    size_t close = t.substr(0, std::min(t.size(), end_marker + 128)).find("-----", end_marker + 8);
    // Documentation shows the shape with a placeholder body ("XXXX", "..."): no key in it.
    std::string_view body = t.substr(end, end_marker - end);
    bool placeholder =
        std::none_of(body.begin(), body.end(), [](char c) { return IsAlnum(c) && c != 'X' && c != 'x' && c != 'n'; });
    if (placeholder) return Reject(end_marker);
    if (close != std::string_view::npos) return Accept(b, close + 5);
  }
  size_t e = end;
  while (e < search_limit) {
    char c = t[e];
    if (IsAlnum(c) || c == '+' || c == '/' || c == '=' || c == '\r' || c == '\n') {
      ++e;
    } else if (c == '\\' && e + 1 < t.size() && t[e + 1] == 'n') {  // "\n" inside a string literal
      e += 2;
    } else {
      break;
    }
  }
  while (e > end && (t[e - 1] == '\n' || t[e - 1] == '\r')) --e;
  return Accept(b, e);
}

// ---------------------------------------------------------------------------------------------
// JWT: header.payload.signature in base64url; the header must decode to JSON naming "alg".

std::string DecodeBase64Url(std::string_view s) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : s) {
    int v;
    if (IsUpper(c))
      v = c - 'A';
    else if (IsLower(c))
      v = c - 'a' + 26;
    else if (IsDigit(c))
      v = c - '0' + 52;
    else if (c == '-' || c == '+')
      v = 62;
    else if (c == '_' || c == '/')
      v = 63;
    else
      break;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xFF);
    }
  }
  return out;
}

Verdict ConfirmJwt(std::string_view t, size_t end) {
  // `end` is 8 characters into the signature (FromJwtStart parsed that far).
  if (end < 9 || t[end - 9] != '.') return Reject(end);
  size_t second_dot = end - 9;
  size_t k = second_dot;
  while (k > 0 && IsB64Url(t[k - 1])) --k;
  if (k == 0 || t[k - 1] != '.') return Reject(end);
  size_t first_dot = k - 1;
  size_t h = first_dot;
  while (h > 0 && IsB64Url(t[h - 1])) --h;
  std::string_view header = t.substr(h, first_dot - h);
  if (!StartsWith(header, "eyJ") || header.size() > 2048) return Reject(end);
  size_t e = end;
  while (e < t.size() && IsB64Url(t[e])) ++e;
  std::string json = DecodeBase64Url(header);
  if (json.empty() || json[0] != '{' || json.find("\"alg\"") == std::string::npos) return Reject(e);
  return Accept(h, e);
}

// ---------------------------------------------------------------------------------------------
// Values that are credentials, as opposed to names, references, placeholders and prose.

bool IsPlaceholderValue(std::string_view v) {
  if (v.empty()) return true;
  char first = v.front();
  if (first == '$' || first == '<' || first == '{' || first == '%' || first == '[' || first == '(') return true;
  if (v.find("${") != std::string_view::npos || v.find("{{") != std::string_view::npos ||
      v.find("%s") != std::string_view::npos || v.find("://") != std::string_view::npos) {
    return true;
  }
  if (std::all_of(v.begin(), v.end(), [&](char c) { return c == first; })) return true;  // "****", "xxxxxx"
  return false;
}

bool IsNonTrivialSecretValue(std::string_view v) {
  if (v.size() < 6 || v.size() > 512) return false;
  if (std::any_of(v.begin(), v.end(), IsSpace)) return false;  // prose: "Password must be ..."
  if (IsPlaceholderValue(v)) return false;
  if (v.front() == '/' || StartsWith(v, "./") || StartsWith(v, "../") || StartsWith(v, "~/")) return false;
  // Letters only (plus _ . -): a name, a type or a placeholder word ("auth_token", "changeme",
  // "YOUR_API_KEY", "Bearer", "bert-base-uncased"), not a credential.
  bool has_digit = false, has_symbol = false;
  for (char c : v) {
    if (IsDigit(c))
      has_digit = true;
    else if (!IsAlpha(c) && c != '_' && c != '.' && c != '-')
      has_symbol = true;
  }
  if (!has_digit && !has_symbol) return false;
  // Numbers, versions and dates ("4096", "1.2.3", "2024-01-15").
  if (std::all_of(v.begin(), v.end(),
                  [](char c) { return IsDigit(c) || c == '.' || c == '-' || c == '_' || c == ':'; })) {
    return false;
  }
  // Colon-separated names: "urn:ietf:params:oauth:token-type:jwt", "cdx:npm:package:private".
  if (std::count(v.begin(), v.end(), ':') >= 2 && std::all_of(v.begin(), v.end(), [](char c) {
        return IsLower(c) || IsDigit(c) || c == ':' || c == '-' || c == '.' || c == '_';
      })) {
    return false;
  }
  return true;
}

bool IsNameChar(char c) { return IsWord(c) || c == '.' || c == '-'; }

// How sure a name is to hold a credential: "password", "secret", "api_key"... are sure;
// "token" alone is weak (in LLM code it is mostly a unit of text); "tokens", "tokenizer" and
// "max_tokens" are not names of credentials at all.
enum class SecretName { kNo, kWeak, kStrong };

SecretName ClassifySecretName(std::string_view name) {
  std::string lower = Lowercase(name);
  for (std::string_view w : {"secret", "passw", "pwd", "api_key", "apikey", "api-key", "private", "credential"}) {
    if (lower.find(w) != std::string::npos) return SecretName::kStrong;
  }
  for (size_t at = lower.find("token"); at != std::string::npos; at = lower.find("token", at + 5)) {
    char next = at + 5 < lower.size() ? lower[at + 5] : '\0';
    if (next != 's' && next != 'i') return SecretName::kWeak;  // not "tokens", "tokenizer", "tokenize"
  }
  return SecretName::kNo;
}

// "result5", "cache_value1", "my-service": reads as a name, not as a password.
bool IsIdentifierLike(std::string_view v) {
  size_t i = 0;
  while (i < v.size() && (IsAlpha(v[i]) || v[i] == '_' || v[i] == '-' || v[i] == '.')) ++i;
  return i > 0 && v.size() - i <= 2 && std::all_of(v.begin() + i, v.end(), IsDigit);
}

// NAME = "value", "name": "value", NAME=value (.env/shell), name: value (YAML). `end` is one past
// the first character of the value (FromSecretWord parsed that far); the finding is the value
// only, so the redacted text keeps the name and still reads as code.
Verdict ConfirmAssignment(std::string_view t, size_t end) {
  size_t v0 = end - 1;
  char quote = (v0 > 0 && IsQuote(t[v0 - 1])) ? t[v0 - 1] : '\0';
  size_t p = quote ? v0 - 1 : v0;  // just after the operator and its blanks
  size_t after_op = p;
  while (p > 0 && IsBlank(t[p - 1])) --p;
  bool blank_after_op = p != after_op;
  if (p == 0) return Reject(end);
  size_t op = p - 1;
  char op_char = t[op];
  if (op_char == '=' && op > 0 && t[op - 1] == ':') {
    --op;  // :=
  } else if (op_char == '>' && op > 0 && t[op - 1] == '=') {
    --op;  // =>
  } else if (op_char != '=' && op_char != ':') {
    return Reject(end);
  }
  if (op > 0 && (t[op - 1] == '=' || t[op - 1] == '!' || t[op - 1] == '<')) return Reject(end);  // ==, !=, <=
  size_t name_end = op;
  while (name_end > 0 && IsBlank(t[name_end - 1])) --name_end;
  bool blank_before_op = name_end != op;
  char name_quote = '\0';
  if (name_end > 0 && IsQuote(t[name_end - 1])) name_quote = t[--name_end];
  size_t name_begin = name_end;
  while (name_begin > 0 && IsNameChar(t[name_begin - 1]) && name_end - name_begin < 96) --name_begin;
  if (name_quote && (name_begin == 0 || t[name_begin - 1] != name_quote)) return Reject(end);
  SecretName strength = ClassifySecretName(t.substr(name_begin, name_end - name_begin));
  if (strength == SecretName::kNo) return Reject(end);

  if (quote) {
    size_t e = v0;
    while (e < t.size() && t[e] != quote && t[e] != '\n' && e - v0 <= 512) ++e;
    if (e >= t.size() || t[e] != quote) return Reject(end);
    if (!IsNonTrivialSecretValue(t.substr(v0, e - v0))) return Reject(e);
    return Accept(v0, e);
  }

  // Unquoted values are code (`token = tokens[i]`, `password: str`) except in lines that start
  // with the name: .env/shell (NAME=value, no blanks), INI (name = value, not indented) and YAML
  // (name: value).
  size_t line = name_begin - (name_quote ? 1 : 0);
  bool exported = line >= 7 && t.substr(line - 7, 7) == "export ";
  if (exported) line -= 7;
  size_t name_start = line;
  while (line > 0 && IsBlank(t[line - 1])) --line;
  if (line > 0 && t[line - 1] != '\n') return Reject(end);
  bool indented = line != name_start;
  bool env_style = op_char == '=' && t[op] == '=' && !blank_before_op && !blank_after_op;
  bool ini_style = op_char == '=' && t[op] == '=' && !indented && !exported;
  bool yaml_style = op_char == ':' && t[op] == ':' && blank_after_op;
  if (!env_style && !ini_style && !yaml_style) return Reject(end);
  size_t e = v0;
  while (e < t.size() && !IsSpace(t[e])) ++e;
  size_t rest = e;
  while (rest < t.size() && IsBlank(t[rest])) ++rest;
  if (rest < t.size() && t[rest] != '\n' && t[rest] != '\r' && t[rest] != '#') return Reject(e);
  std::string_view value = t.substr(v0, e - v0);
  if (value.back() == ';' || value.back() == ',' || value.find_first_of("()[]") != std::string_view::npos) {
    return Reject(e);
  }
  if (!IsNonTrivialSecretValue(value)) return Reject(e);
  if (strength == SecretName::kWeak && !env_style && IsIdentifierLike(value)) return Reject(e);
  return Accept(v0, e);
}

// ---------------------------------------------------------------------------------------------
// scheme://user:password@host: the password only.

Verdict ConfirmUrlPassword(std::string_view t, size_t end) {
  size_t at = end - 1;
  size_t k = at;
  size_t userinfo = std::string_view::npos;
  while (k >= 3 && at - k < 512) {
    char c = t[k - 1];
    if (IsSpace(c) || IsQuote(c) || c == '<' || c == '>') break;
    if (c == '/' && t[k - 2] == '/' && t[k - 3] == ':') {
      userinfo = k;
      break;
    }
    --k;
  }
  if (userinfo == std::string_view::npos) return Reject(end);
  size_t colon = t.substr(userinfo, at - userinfo).find(':');
  if (colon == std::string_view::npos) return Reject(end);
  size_t b = userinfo + colon + 1;
  std::string_view password = t.substr(b, at - b);
  if (password.empty() || IsPlaceholderValue(password)) return Reject(end);
  static const std::array<std::string_view, 7> kExamples = {"password", "pass",   "passwd",  "pwd",
                                                            "pw",       "secret", "changeme"};
  std::string lower = Lowercase(password);
  if (std::find(kExamples.begin(), kExamples.end(), lower) != kExamples.end()) return Reject(end);
  return Accept(b, at);
}

// ---------------------------------------------------------------------------------------------
// Generic random-looking tokens after '=', ':', a quote or "Bearer ".

double ShannonEntropy(std::string_view s) {
  std::array<int, 256> counts{};
  for (char c : s) ++counts[static_cast<unsigned char>(c)];
  double h = 0, n = static_cast<double>(s.size());
  for (int count : counts) {
    if (count == 0) continue;
    double p = count / n;
    h -= p * std::log2(p);
  }
  return h;
}

int CharClass(char c) { return IsUpper(c) ? 0 : IsLower(c) ? 1 : IsDigit(c) ? 2 : 3; }

// Lockfiles and manifests are full of integrity hashes; they are not credentials.
bool OnHashLine(std::string_view t, size_t b) {
  size_t line = t.rfind('\n', b == 0 ? 0 : b - 1);
  line = line == std::string_view::npos ? 0 : line + 1;
  if (b - line > 160) line = b - 160;
  std::string lower = Lowercase(t.substr(line, b - line));
  for (std::string_view w : {"integrity", "checksum", "hash", "digest", "sha1", "sha256", "sha384", "sha512", "base64,",
                             "nonce", "etag", "h1:"}) {
    if (lower.find(w) != std::string::npos) return true;
  }
  return false;
}

// A maximal run [b, e) of base64/base64url characters, at least 24 long. Only runs in
// assignment or quote context count: after '=', ':', a quote or "Bearer "/"token " (blanks and
// one opening quote may come between).
bool InValueContext(std::string_view t, size_t b) {
  size_t p = b;
  if (p > 0 && IsQuote(t[p - 1])) --p;
  size_t blanks = 0;
  while (p > 0 && IsBlank(t[p - 1]) && blanks < 4) {
    --p;
    ++blanks;
  }
  if (p == 0) return false;
  char c = t[p - 1];
  if (c == '=' || c == ':' || IsQuote(c)) return true;
  if (blanks == 0) return false;
  auto word_before = [&](std::string_view w) {
    if (p < w.size()) return false;
    for (size_t k = 0; k < w.size(); ++k) {
      if (ToLower(t[p - w.size() + k]) != w[k]) return false;
    }
    return p == w.size() || !IsWord(t[p - w.size() - 1]);
  };
  return word_before("bearer") || word_before("token");
}

// Mixed-case tokens with digits that are names, not credentials (seen in llama.cpp's sources):
//  - slugs: model and repository names, "meta-llama/Llama-4-Scout-17B-16E-Instruct-Q4_K_M";
//    3 or more of - _ / + making up at least a tenth of the token (random base64 does so for
//    about 2-4 % of 24-64 character tokens);
//  - names with a hash in them, "Dawn-94c3c9cc0d5fb2e85aebb370fa8d37b71aa34655-ubuntu-latest";
//  - CamelCase identifiers, "Packed4x8IntegerDotProduct": 3 or more capitalised words of 3+
//    letters covering 60 % of the token (random base64: under 1.5 %).
bool LooksLikeName(std::string_view token) {
  size_t separators = 0, hex_run = 0, longest_hex = 0;
  for (char c : token) {
    bool separator = c == '-' || c == '_' || c == '/' || c == '+';
    separators += separator ? 1 : 0;
    hex_run = separator ? 0 : IsHexOrDash(c) ? hex_run + 1 : 0;
    longest_hex = std::max(longest_hex, hex_run);
  }
  if (separators >= 3 && separators * 10 >= token.size()) return true;
  if (separators >= 1 && longest_hex >= 16) return true;
  size_t words = 0, covered = 0;
  for (size_t i = 0; i < token.size();) {
    if (IsUpper(token[i])) {
      size_t j = i + 1;
      while (j < token.size() && IsLower(token[j])) ++j;
      if (j - i >= 3) {
        ++words;
        covered += j - i;
      }
      i = j;
    } else {
      ++i;
    }
  }
  return words >= 3 && covered * 10 >= token.size() * 6;
}

Verdict ConfirmHighEntropy(std::string_view t, size_t b, size_t e) {
  constexpr size_t kMaxLen = 256;
  if (!InValueContext(t, b)) return Reject(e);
  size_t padded = e;
  while (padded < t.size() && t[padded] == '=' && padded - e < 2) ++padded;
  size_t len = e - b;
  // Longer runs are data (inline images, fixtures, minified code), not credentials.
  if (len > kMaxLen) return Reject(e);
  if (padded < t.size()) {
    char next = t[padded];
    if (next == '(' || next == '@' || next == '\\') return Reject(e);  // a call, an e-mail, an escape
    if (next == '.' && padded + 1 < t.size() && IsAlnum(t[padded + 1])) return Reject(e);  // dotted name, file
  }
  std::string_view token = t.substr(b, len);
  // Hex (hashes, git SHAs, UUIDs, hex constants) is left to the assignment rule, which flags it
  // when the name says it is a secret.
  if (std::all_of(token.begin(), token.end(), IsHexOrDash)) return Reject(e);
  bool upper = false, lower = false, digit = false;
  size_t transitions = 0;
  for (size_t i = 0; i < token.size(); ++i) {
    upper |= IsUpper(token[i]);
    lower |= IsLower(token[i]);
    digit |= IsDigit(token[i]);
    if (i > 0 && CharClass(token[i]) != CharClass(token[i - 1])) ++transitions;
  }
  if (!upper || !lower || !digit) return Reject(e);  // identifiers, words, CONSTANTS, numbers
  if (LooksLikeName(token)) return Reject(e);
  // Random text switches character class about 2 times in 3; camelCase identifiers about once
  // a word.
  if (static_cast<double>(transitions) < 0.4 * static_cast<double>(len - 1)) return Reject(e);
  double threshold = std::min(4.3, 0.8 * std::log2(static_cast<double>(len)));
  if (ShannonEntropy(token) < threshold) return Reject(e);
  if (OnHashLine(t, b)) return Reject(e);
  return Accept(b, padded);
}

// ---------------------------------------------------------------------------------------------
// E-mail addresses.

bool IsLocalChar(char c) { return IsAlnum(c) || c == '.' || c == '_' || c == '%' || c == '+' || c == '-'; }

Verdict ConfirmEmail(std::string_view t, size_t end) {
  size_t limit = end > 72 ? end - 72 : 0;
  size_t at = end;
  while (at > limit && t[at - 1] != '@') --at;
  if (at == limit || t[at - 1] != '@') return Reject(end);
  --at;
  size_t b = at;
  while (b > 0 && IsLocalChar(t[b - 1]) && at - b <= 64) --b;
  while (b < at && t[b] == '.') ++b;
  if (b == at || at - b > 64) return Reject(end);
  // scheme://user:password@host is a URL's userinfo, not an address (url_password has it).
  for (size_t k = b; k >= 3 && b - k < 256; --k) {
    char c = t[k - 1];
    if (IsSpace(c) || IsQuote(c) || c == '<' || c == '>' || c == '(' || c == ',') break;
    if (c == '/' && t[k - 2] == '/' && t[k - 3] == ':') return Reject(end);
  }
  size_t e = at + 1;
  while (e < t.size() && (IsAlnumOrDash(t[e]) || t[e] == '.') && e - at <= 255) ++e;
  while (e > at + 1 && (t[e - 1] == '.' || t[e - 1] == '-')) --e;
  std::string_view domain = t.substr(at + 1, e - at - 1);
  size_t dot = domain.rfind('.');
  if (dot == std::string_view::npos || domain.find("..") != std::string_view::npos) return Reject(e);
  std::string tld = Lowercase(domain.substr(dot + 1));
  if (tld.size() < 2 || tld.size() > 24 || !std::all_of(tld.begin(), tld.end(), IsAlpha)) return Reject(e);
  // "icon@2x.png" and friends are file names.
  for (std::string_view ext : {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "ts", "css", "py", "cpp", "hpp",
                               "json", "md", "txt", "html"}) {
    if (tld == ext) return Reject(e);
  }
  if (e < t.size() && (t[e] == ':' || t[e] == '(')) return Reject(e);  // git@github.com:org/repo, a@b.method()
  return Accept(b, e);
}

// ---------------------------------------------------------------------------------------------
// Phone numbers.

bool IsPhoneSeparator(char c) { return c == ' ' || c == '.' || c == '-' || c == '(' || c == ')'; }

// "+<country><number>" with optional separators: 9 to 15 digits (E.164 allows 15; fewer than 9
// is rarer as a phone number than as arithmetic).
Verdict ConfirmPhoneE164(std::string_view t, size_t end) {
  size_t k = end;
  while (k > 0 && end - k < 40 && t[k - 1] != '+') --k;
  if (k == 0 || t[k - 1] != '+') return Reject(end);
  size_t b = k - 1;
  if (b > 0 && (IsWord(t[b - 1]) || t[b - 1] == ')' || t[b - 1] == '+')) return Reject(end);  // a+1234..., 1e+10
  size_t i = b + 1, last = i;
  int digits = 0;
  while (i < t.size()) {
    if (IsDigit(t[i])) {
      ++digits;
      last = ++i;
      continue;
    }
    size_t j = i;
    while (j < t.size() && j - i < 3 && IsPhoneSeparator(t[j])) ++j;
    if (j == i || j >= t.size() || !IsDigit(t[j])) break;
    i = j;
  }
  if (digits < 9 || digits > 15) return Reject(std::max(end, last));
  if (last < t.size() && IsWord(t[last])) return Reject(std::max(end, last));
  return Accept(b, last);
}

// A number must not be the middle of a longer dotted/dashed number (a version, a date, an ID).
bool ContinuesNumberBefore(std::string_view t, size_t b) {
  if (b == 0) return false;
  char c = t[b - 1];
  if (IsWord(c)) return true;
  return (c == '.' || c == '-' || c == '/') && b >= 2 && IsDigit(t[b - 2]);
}

bool ContinuesNumberAfter(std::string_view t, size_t e) {
  if (e >= t.size()) return false;
  char c = t[e];
  if (IsWord(c)) return true;
  return (c == '.' || c == '-' || c == '/') && e + 1 < t.size() && IsDigit(t[e + 1]);
}

// North American: 415-555-0132, 415.555.0132, 415 555 0132 (one separator throughout).
Verdict ConfirmPhoneNanp(std::string_view t, size_t end) {
  size_t b = end - 12;
  char sep = t[b + 3];
  if (t[b + 7] != sep) return Reject(end);
  if (ContinuesNumberAfter(t, end)) return Reject(end);
  if (ContinuesNumberBefore(t, b)) {
    // "1-800-555-0132": the country code with the same separator is part of the number.
    if (b >= 2 && t[b - 1] == sep && t[b - 2] == '1' && (b == 2 || !IsAlnum(t[b - 3])) &&
        !(b >= 3 && (t[b - 3] == '.' || t[b - 3] == '-'))) {
      return Accept(b - 2, end);
    }
    return Reject(end);
  }
  return Accept(b, end);
}

// North American with the area code in parentheses: (415) 555-0132.
Verdict ConfirmPhoneNanpParen(std::string_view t, size_t end) {
  size_t b = t[end - 14] == '(' ? end - 14 : end - 13;
  if (t[b] != '(' || ContinuesNumberAfter(t, end)) return Reject(end);
  if (b > 0 && IsWord(t[b - 1])) return Reject(end);
  return Accept(b, end);
}

// National trunk-prefixed: 020 7946 0958, 07700 900123, 030 12345678, 089/1234567.
Verdict ConfirmPhoneNational(std::string_view t, size_t end) {
  size_t wb = end;
  while (wb > 0 && end - wb < 16 && (IsDigit(t[wb - 1]) || t[wb - 1] == ' ' || t[wb - 1] == '-' || t[wb - 1] == '/'))
    --wb;
  for (size_t p = wb; p + 10 <= end; ++p) {
    if (t[p] != '0' || (p > 0 && IsAlnum(t[p - 1]))) continue;
    // Parse groups from p; it must end exactly at `end`.
    size_t i = p;
    int digits = 0, groups = 0, first_group = 0;
    bool ok = true;
    while (i < end) {
      size_t g = i;
      while (i < end && IsDigit(t[i])) ++i;
      if (i == g) {
        ok = false;
        break;
      }
      int n = static_cast<int>(i - g);
      if (groups == 0) first_group = n;
      digits += n;
      ++groups;
      if (i < end) {
        char sep = t[i];
        if (sep == '/' && groups != 1) {
          ok = false;
          break;
        }
        ++i;
      }
    }
    if (!ok || groups < 2 || first_group < 3 || first_group > 5 || digits < 10 || digits > 11) continue;
    if (ContinuesNumberBefore(t, p) || ContinuesNumberAfter(t, end)) return Reject(end);
    return Accept(p, end);
  }
  return Reject(end);
}

// French: 01 23 45 67 89, 01.23.45.67.89.
Verdict ConfirmPhoneFrench(std::string_view t, size_t end) {
  size_t b = end - 14;
  char sep = t[b + 2];
  for (size_t s = b + 2; s < end; s += 3) {
    if (t[s] != sep) return Reject(end);
  }
  if (ContinuesNumberBefore(t, b) || ContinuesNumberAfter(t, end)) return Reject(end);
  return Accept(b, end);
}

// ---------------------------------------------------------------------------------------------
// IBAN: country code, two check digits, the BBAN; the length is fixed per country, mod 97 == 1.

int IbanLength(std::string_view country) {
  static const std::map<std::string_view, int> kLengths = {
      {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22}, {"BH", 22},
      {"BR", 29}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DK", 18}, {"DO", 28}, {"EE", 20},
      {"EG", 29}, {"ES", 24}, {"FI", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18},
      {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28}, {"IE", 22}, {"IL", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30},
      {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"MC", 27}, {"MD", 24},
      {"ME", 22}, {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15}, {"PK", 24}, {"PL", 28},
      {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24}, {"SE", 24}, {"SI", 19}, {"SK", 24},
      {"SM", 27}, {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VG", 24}, {"XK", 20}};
  auto it = kLengths.find(country);
  return it == kLengths.end() ? 0 : it->second;
}

bool IbanChecksumOk(std::string_view iban) {
  int remainder = 0;
  auto feed = [&](char c) {
    if (IsDigit(c)) {
      remainder = (remainder * 10 + (c - '0')) % 97;
    } else {
      int v = c - 'A' + 10;
      remainder = (remainder * 100 + v) % 97;
    }
  };
  for (char c : iban.substr(4)) feed(c);
  for (char c : iban.substr(0, 4)) feed(c);
  return remainder == 1;
}

Verdict ConfirmIban(std::string_view t, size_t end) {
  // The trigger covers the country code, check digits and 8 more characters (blanks optional).
  size_t b = end;
  int seen = 0;
  while (b > 0 && seen < 12) {
    --b;
    if (t[b] != ' ') ++seen;
  }
  if (seen < 12 || !IsUpper(t[b]) || (b > 0 && IsAlnum(t[b - 1]))) return Reject(end);
  int length = IbanLength(t.substr(b, 2));
  if (length == 0) return Reject(end);
  std::string compact;
  size_t i = b;
  while (i < t.size() && static_cast<int>(compact.size()) < length) {
    char c = t[i];
    if (IsUpperOrDigit(c)) {
      compact += c;
      ++i;
    } else if (c == ' ' && compact.size() % 4 == 0 && i + 1 < t.size() && IsUpperOrDigit(t[i + 1])) {
      ++i;  // the printed form groups by four
    } else {
      break;
    }
  }
  if (static_cast<int>(compact.size()) != length) return Reject(std::max(end, i));
  if (i < t.size() && IsAlnum(t[i])) return Reject(std::max(end, i));
  if (!IbanChecksumOk(compact)) return Reject(std::max(end, i));
  return Accept(b, i);
}

// ---------------------------------------------------------------------------------------------
// Payment cards: 13-19 digits, blanks or dashes between groups, Luhn, a known issuer range.

bool LuhnOk(const int* d, int n) {
  int sum = 0;
  for (int i = 0; i < n; ++i) {
    int v = d[n - 1 - i];
    if (i % 2 == 1) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
  }
  return sum % 10 == 0;
}

bool KnownCardRange(const int* d, int n) {
  auto prefix = [&](int digits) {
    int v = 0;
    for (int i = 0; i < digits; ++i) v = v * 10 + d[i];
    return v;
  };
  int p2 = prefix(2), p3 = prefix(3), p4 = prefix(4);
  if (d[0] == 4) return n == 13 || n == 16 || n == 19;                                          // Visa
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n == 16;                     // Mastercard
  if (p2 == 34 || p2 == 37) return n == 15;                                                     // American Express
  if (p4 == 6011 || p2 == 65 || (p3 >= 644 && p3 <= 649)) return n >= 16 && n <= 19;            // Discover
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 && n <= 19;                                      // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39) return n >= 14 && n <= 19;  // Diners
  if (p2 == 62) return n >= 16 && n <= 19;                                                      // UnionPay
  return false;
}

// Printed card numbers are grouped 4-4-4-4 (and 4-4-4-4-3 for 19 digits), American Express and
// Diners 4-6-5 / 4-6-4, 13-digit Visa 4-3-3-3; a separator elsewhere is some other number.
bool CardGroupsOk(std::string_view s, char sep) {
  std::vector<size_t> groups{0};
  for (char c : s) {
    if (c == sep) {
      groups.push_back(0);
    } else {
      ++groups.back();
    }
  }
  static const std::vector<std::vector<size_t>> kLayouts = {
      {4, 4, 4, 4}, {4, 4, 4, 4, 3}, {4, 6, 5}, {4, 6, 4}, {4, 3, 3, 3}};
  return std::find(kLayouts.begin(), kLayouts.end(), groups) != kLayouts.end();
}

Verdict ConfirmCard(std::string_view t, size_t end) {
  // The trigger covers exactly 13 digits.
  size_t b = end;
  int counted = 0;
  while (b > 0 && counted < 13) {
    --b;
    if (IsDigit(t[b])) ++counted;
  }
  if (counted < 13) return Reject(end);
  if (b > 0 && (IsWord(t[b - 1]) || t[b - 1] == '.' || t[b - 1] == '-' || t[b - 1] == '+')) return Reject(end);
  std::array<int, 20> d{};
  int n = 0;
  char sep = '\0';
  size_t i = b, last = b;
  while (i < t.size() && n < 20) {
    char c = t[i];
    if (IsDigit(c)) {
      d[n++] = c - '0';
      last = ++i;
    } else if ((c == ' ' || c == '-') && i > b && IsDigit(t[i - 1]) && i + 1 < t.size() && IsDigit(t[i + 1]) &&
               (sep == '\0' || sep == c)) {
      sep = c;
      ++i;
    } else {
      break;
    }
  }
  size_t resume = std::max(end, last);
  if (n < 13 || n > 19) return Reject(resume);
  if (last + 1 < t.size() && (t[last] == '-' || t[last] == '.') && IsAlnum(t[last + 1]))
    return Reject(resume);  // a UUID, an ID
  if (sep != '\0' && !CardGroupsOk(t.substr(b, last - b), sep)) return Reject(resume);
  if (last < t.size() && (IsWord(t[last]) || (t[last] == '.' && last + 1 < t.size() && IsDigit(t[last + 1])))) {
    return Reject(resume);
  }
  if (!LuhnOk(d.data(), n) || !KnownCardRange(d.data(), n)) return Reject(resume);
  return Accept(b, last);
}

// ---------------------------------------------------------------------------------------------
// US Social Security number: AAA-GG-SSSS, never issued: area 000, 666, 900-999; group 00;
// serial 0000; and the two famous samples (078-05-1120 from a wallet insert, 123-45-6789).

Verdict ConfirmSsn(std::string_view t, size_t end) {
  size_t b = end - 11;
  if (ContinuesNumberBefore(t, b) || ContinuesNumberAfter(t, end)) return Reject(end);
  std::string_view s = t.substr(b, 11);
  int area = std::atoi(std::string(s.substr(0, 3)).c_str());
  int group = std::atoi(std::string(s.substr(4, 2)).c_str());
  int serial = std::atoi(std::string(s.substr(7, 4)).c_str());
  if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0) return Reject(end);
  if (s == "078-05-1120" || s == "123-45-6789") return Reject(end);
  return Accept(b, end);
}

// ---------------------------------------------------------------------------------------------
// UK NHS number: 10 digits, the last a mod-11 check digit. Printed 3-3-4 ("943 476 5919"); a
// bare 10-digit run only right after an "NHS" label (bare, it is as likely a Unix time).

bool NhsChecksumOk(const std::string& digits) {
  if (std::all_of(digits.begin(), digits.end(), [&](char c) { return c == digits[0]; })) return false;
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (digits[i] - '0') * (10 - i);
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  return check != 10 && check == digits[9] - '0';
}

Verdict ConfirmNhsGrouped(std::string_view t, size_t end) {
  size_t b = end - 12;
  if (t[b + 3] != t[b + 7]) return Reject(end);
  if (ContinuesNumberBefore(t, b) || ContinuesNumberAfter(t, end)) return Reject(end);
  std::string digits;
  for (char c : t.substr(b, 12)) {
    if (IsDigit(c)) digits += c;
  }
  if (!NhsChecksumOk(digits)) return Reject(end);
  return Accept(b, end);
}

Verdict ConfirmNhsLabelled(std::string_view t, size_t end) {
  size_t b = end - 10;
  if (ContinuesNumberAfter(t, end) || !NhsChecksumOk(std::string(t.substr(b, 10)))) return Reject(end);
  return Accept(b, end);
}

// Medical record number: the digits after the label (5 to 12).
Verdict ConfirmMrn(std::string_view t, size_t end) {
  size_t b = end - 5, e = end;
  while (e < t.size() && IsDigit(t[e])) ++e;
  if (e - b > 12 || (e < t.size() && IsAlnum(t[e]))) return Reject(e);
  return Accept(b, e);
}

// ---------------------------------------------------------------------------------------------
// Anchors. The main Vectorscan database holds only literals (it runs at several GB/s; character
// classes cost it an order of magnitude), so each confirmation parses the rest of its shape by
// hand, forward from the end of the literal, then reuses the checks above.

// name ["'] [blanks] (= : := =>) [blanks] ["'] value, parsed forward from a secret word.
Verdict FromSecretWord(std::string_view t, size_t end, size_t aws_rule) {
  size_t i = end, n = t.size();
  while (i < n && IsNameChar(t[i]) && i - end < 48) ++i;
  if (i < n && IsQuote(t[i])) ++i;
  for (int k = 0; k < 4 && i < n && IsBlank(t[i]); ++k) ++i;
  if (i >= n) return Reject(end);
  if ((t[i] == ':' || t[i] == '=') && i + 1 < n && t[i + 1] == '=') {
    if (t[i] == '=') return Reject(end);  // "==" compares
    i += 2;
  } else if (t[i] == '=' && i + 1 < n && t[i + 1] == '>') {
    i += 2;
  } else if (t[i] == '=' || t[i] == ':') {
    i += 1;
  } else {
    return Reject(end);
  }
  for (int k = 0; k < 4 && i < n && IsBlank(t[i]); ++k) ++i;
  if (i < n && IsQuote(t[i])) ++i;
  if (i >= n || IsSpace(t[i]) || IsQuote(t[i])) return Reject(end);
  Verdict v = ConfirmAssignment(t, i + 1);
  if (v.found && v.end - v.begin == 40) {
    // aws_secret_access_key / SecretAccessKey / AWS_SECRET_KEY = <40 base64 characters>
    std::string_view value = t.substr(v.begin, 40);
    bool b64 = std::all_of(value.begin(), value.end(), [](char c) { return IsAlnum(c) || c == '/' || c == '+'; });
    size_t from = v.begin > 64 ? v.begin - 64 : 0;
    std::string name;
    for (char c : t.substr(from, v.begin - from)) {
      if (c != '_' && c != '-') name += ToLower(c);
    }
    if (b64 && (name.find("secretaccesskey") != std::string::npos || name.find("awssecretkey") != std::string::npos)) {
      v.rule = aws_rule;
    }
  }
  return v;
}

Verdict FromPemHeader(std::string_view t, size_t end) {  // after "-----BEGIN "
  size_t i = end, n = t.size();
  for (int words = 0; words <= 3; ++words) {
    if (t.substr(i, 11) == "PRIVATE KEY") {
      i += 11;
      if (t.substr(i, 6) == " BLOCK") i += 6;
      if (t.substr(i, 5) != "-----") return Reject(end);
      return ConfirmPrivateKey(t, i + 5);
    }
    size_t w = i;
    while (i < n && IsUpperOrDigit(t[i]) && i - w < 16) ++i;
    if (i == w || i >= n || t[i] != ' ') return Reject(end);
    ++i;
  }
  return Reject(end);
}

Verdict FromJwtStart(std::string_view t, size_t end) {  // after "eyJ"
  size_t h = end - 3, i = end, n = t.size();
  if (h > 0 && IsB64Url(t[h - 1])) return Reject(end);
  while (i < n && IsB64Url(t[i])) ++i;
  if (i - h < 13 || i >= n || t[i] != '.') return Reject(i);
  size_t p = ++i;
  while (i < n && IsB64Url(t[i])) ++i;
  if (i - p < 2 || i >= n || t[i] != '.') return Reject(i);
  size_t sig = ++i;
  while (i < n && IsB64Url(t[i]) && i - sig < 8) ++i;
  if (i - sig < 8) return Reject(i);
  return ConfirmJwt(t, i);
}

Verdict FromSchemeSeparator(std::string_view t, size_t end) {  // after "://"
  size_t s = end - 3;
  if (s == 0 || !IsAlnum(t[s - 1])) return Reject(end);
  size_t i = end, n = t.size();
  while (i < n && i - end < 512) {
    char c = t[i];
    if (c == '@') return ConfirmUrlPassword(t, i + 1);
    if (IsSpace(c) || c == '/' || IsQuote(c) || c == '<' || c == '>') break;
    ++i;
  }
  return Reject(end);
}

// "NHS [no|number|num|#] [:#=] 9434765919"
Verdict FromNhsLabel(std::string_view t, size_t end) {
  size_t b = end - 3, i = end, n = t.size();
  if (b > 0 && IsWord(t[b - 1])) return Reject(end);
  while (i < n && IsBlank(t[i])) ++i;
  for (std::string_view word : {"number", "num", "no.", "no", "#"}) {
    if (Lowercase(t.substr(i, word.size())) == word) {
      i += word.size();
      break;
    }
  }
  while (i < n && IsBlank(t[i])) ++i;
  if (i < n && (t[i] == ':' || t[i] == '#' || t[i] == '=')) ++i;
  while (i < n && IsBlank(t[i])) ++i;
  size_t d = i;
  while (i < n && IsDigit(t[i])) ++i;
  if (i - d != 10) return Reject(std::max(end, i));
  return ConfirmNhsLabelled(t, i);
}

// "<label> [no|number|num|#] [:#=-] 0012345"; label_len is the literal's length.
Verdict FromMrnLabel(std::string_view t, size_t end, size_t label_len) {
  size_t b = end - label_len, i = end, n = t.size();
  if ((b > 0 && IsWord(t[b - 1])) || (i < n && IsAlpha(t[i]) && IsAlpha(t[end - 1]))) return Reject(end);
  while (i < n && IsBlank(t[i])) ++i;
  for (std::string_view word : {"number", "num", "no.", "no", "#"}) {
    if (Lowercase(t.substr(i, word.size())) == word) {
      i += word.size();
      break;
    }
  }
  while (i < n && IsBlank(t[i])) ++i;
  if (i < n && (t[i] == ':' || t[i] == '#' || t[i] == '=' || t[i] == '-')) ++i;
  while (i < n && IsBlank(t[i])) ++i;
  size_t d = i;
  while (i < n && IsDigit(t[i]) && i - d < 5) ++i;
  if (i - d < 5) return Reject(std::max(end, i));
  return ConfirmMrn(t, i);
}

bool IsAnthropicShape(std::string_view token) {  // sk-ant-api03-... / sk-ant-admin01-...
  std::string_view rest = token.substr(7);
  size_t word = StartsWith(rest, "api") ? 3 : StartsWith(rest, "admin") ? 5 : 0;
  return word != 0 && rest.size() > word + 3 && IsDigit(rest[word]) && IsDigit(rest[word + 1]) && rest[word + 2] == '-';
}

// ---------------------------------------------------------------------------------------------
// Prefilters that replace character-class patterns.

const std::array<bool, 256> kTokenChar = [] {
  std::array<bool, 256> table{};
  for (int c = 0; c < 256; ++c) table[c] = IsTokenChar(static_cast<char>(c));
  return table;
}();

// The words that make a name secret-looking ("DB_PASSWORD", "apiKey", "client_secret"), "NHS"
// and the MRN labels, found case-insensitively. With AVX-512 the prefilter finds them (by their
// first three letters, then a full compare); otherwise they are caseless literals in the
// Vectorscan database. (Caseless literals mixed with the case-sensitive vendor prefixes cost
// Vectorscan about a third of its speed here.)
#if defined(__AVX512BW__) && !defined(HEARTH_SCANNER_NO_SIMD)
constexpr bool kKeywordsInPrefilter = true;
#else
constexpr bool kKeywordsInPrefilter = false;
#endif
constexpr std::array<std::string_view, 9> kSecretWords = {"secret", "token",   "passw",   "pwd",       "api_key",
                                                          "apikey", "api-key", "private", "credential"};
constexpr std::string_view kNhsWord = "nhs";
// The prefilter's three-letter prefixes of those words; the MRN labels' are added at run time.
constexpr std::array<std::string_view, 8> kKeywordPrefixes = {"sec", "tok", "pas", "pwd", "api", "pri", "cre", "nhs"};
using Prefix3 = std::array<char, 3>;  // lowercase

// Per 64-byte chunk, one bit per byte: digits, base64/base64url characters, '@'. The widest
// instruction set the compiler targets is used (the build passes -march=native with
// HEARTH_NATIVE); SSE2 is the x86-64 baseline; other CPUs take the scalar loop.
struct ChunkMasks {
  uint64_t digits;
  uint64_t tokens;
  uint64_t at_signs;
};

#if defined(__AVX512BW__) && !defined(HEARTH_SCANNER_NO_SIMD)
inline ChunkMasks ClassifyChunk(const unsigned char* p) {
  const __m512i v = _mm512_loadu_si512(p);
  auto in_range = [](__m512i x, char lo, int count) {
    return _mm512_cmplt_epu8_mask(_mm512_sub_epi8(x, _mm512_set1_epi8(lo)), _mm512_set1_epi8(static_cast<char>(count)));
  };
  __mmask64 digit = in_range(v, '0', 10);
  __mmask64 alpha = in_range(_mm512_or_si512(v, _mm512_set1_epi8(0x20)), 'a', 26);
  __mmask64 punct = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('_')) |
                    _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('-')) |
                    _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('+')) | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('/'));
  return {digit, digit | alpha | punct, _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('@'))};
}

// Bit i: the three bytes at p + i start one of `prefixes` (case-insensitively); reads p[0..65].
inline uint64_t KeywordStarts(const unsigned char* p, const std::vector<Prefix3>& prefixes) {
  const __m512i lower = _mm512_set1_epi8(0x20);
  const __m512i v0 = _mm512_or_si512(_mm512_loadu_si512(p), lower);
  const __m512i v1 = _mm512_or_si512(_mm512_loadu_si512(p + 1), lower);
  const __m512i v2 = _mm512_or_si512(_mm512_loadu_si512(p + 2), lower);
  uint64_t any = 0;
  for (const Prefix3& w : prefixes) {
    any |= _mm512_cmpeq_epi8_mask(v0, _mm512_set1_epi8(static_cast<char>(w[0] | 0x20))) &
           _mm512_cmpeq_epi8_mask(v1, _mm512_set1_epi8(static_cast<char>(w[1] | 0x20))) &
           _mm512_cmpeq_epi8_mask(v2, _mm512_set1_epi8(static_cast<char>(w[2] | 0x20)));
  }
  return any;
}
#elif defined(__SSE2__) && !defined(HEARTH_SCANNER_NO_SIMD)
inline ChunkMasks ClassifyChunk(const unsigned char* p) {
  ChunkMasks m{0, 0, 0};
  for (int k = 0; k < 4; ++k) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
    auto in_range = [](__m128i x, char lo, int count) {  // lo <= x < lo + count, unsigned, via a signed compare
      __m128i shifted = _mm_add_epi8(x, _mm_set1_epi8(static_cast<char>(-128 - lo)));
      return _mm_cmplt_epi8(shifted, _mm_set1_epi8(static_cast<char>(-128 + count)));
    };
    __m128i digit = in_range(v, '0', 10);
    __m128i alpha = in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 26);
    __m128i punct =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('_')), _mm_cmpeq_epi8(v, _mm_set1_epi8('-'))),
                     _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('+')), _mm_cmpeq_epi8(v, _mm_set1_epi8('/'))));
    __m128i token = _mm_or_si128(_mm_or_si128(digit, alpha), punct);
    auto bits = [](__m128i x) { return uint64_t{static_cast<uint16_t>(_mm_movemask_epi8(x))}; };
    m.digits |= bits(digit) << (16 * k);
    m.tokens |= bits(token) << (16 * k);
    m.at_signs |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8('@'))) << (16 * k);
  }
  return m;
}
#else
inline ChunkMasks ClassifyChunk(const unsigned char* p) {
  ChunkMasks m{0, 0, 0};
  for (unsigned i = 0; i < 64; ++i) {
    m.digits |= uint64_t{p[i] >= '0' && p[i] <= '9' ? 1u : 0u} << i;
    m.tokens |= uint64_t{kTokenChar[p[i]] ? 1u : 0u} << i;
    m.at_signs |= uint64_t{p[i] == '@' ? 1u : 0u} << i;
  }
  return m;
}
#endif

// Bit k (0..3) set when 16-byte block k of the chunk and the block before it hold 9 or more
// digits together. Branch-free: per-block counts in 16-bit lanes (a SWAR popcount).
inline unsigned DensePairs(uint64_t previous_digits, uint64_t digits) {
  auto lane_counts = [](uint64_t x) {
    x -= (x >> 1) & 0x5555555555555555ULL;
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
    return (x + (x >> 8)) & 0x00FF00FF00FF00FFULL;  // count of each 16-bit lane, in that lane
  };
  uint64_t counts = lane_counts(digits);
  uint64_t before = (counts << 16) | (lane_counts(previous_digits) >> 48);       // lane k: block k - 1
  uint64_t sums = counts + before;                                               // lanes hold <= 32
  uint64_t over = (sums + 0x7FF7'7FF7'7FF7'7FF7ULL) & 0x8000'8000'8000'8000ULL;  // lane >= 9
  return static_cast<unsigned>(((over >> 15) & 1) | ((over >> 30) & 2) | ((over >> 45) & 4) | ((over >> 60) & 8));
}

// Bits i of `low` where 24 token characters in a row start, looking on into `high`.
inline uint64_t RunStarts(uint64_t low, uint64_t high) {
  for (int shift : {1, 2, 4, 8, 8}) {  // runs of 2, 4, 8, 16, 24
    low &= (low >> shift) | (high << (64 - shift));
    high &= high >> shift;
  }
  return low;
}

// One pass over the text, 64 bytes at a time, that finds where the character-class detectors
// must look (Vectorscan is slow on character classes, fast on literals):
//  - digit windows: every numeric identifier we look for (card, SSN, NHS, IBAN, phone) has at
//    least 9 digits within 16 bytes, so some of its digits lie in two neighbouring blocks
//    holding 9 or more digits; those pairs, merged.
//  - token runs: maximal runs of base64/base64url characters at least 24 long, found on the bit
//    masks (24 ones in a row) and then measured byte by byte;
//  - every '@' (a one-byte literal slows Vectorscan's literal matcher down noticeably).
struct Prefilter {
  std::vector<std::pair<size_t, size_t>> digit_windows;
  std::vector<std::pair<size_t, size_t>> token_runs;
  std::vector<size_t> at_signs;        // offsets of '@', for the e-mail rule
  std::vector<size_t> keyword_starts;  // kKeywordsInPrefilter: where one of the prefixes starts
};

Prefilter RunPrefilter(std::string_view t, bool want_token_runs,
                       [[maybe_unused]] const std::vector<Prefix3>& prefixes) {
  constexpr size_t kBlock = 16, kChunk = 64;
  Prefilter out;
  const auto* s = reinterpret_cast<const unsigned char*>(t.data());
  const size_t n = t.size();
  uint64_t previous_digits = 0, previous_tokens = 0;
  size_t runs_done_until = 0;        // token runs that start before this offset are already measured
  unsigned char padded[kChunk + 2];  // KeywordStarts reads two bytes past the chunk

  auto mark_digits = [&](size_t block) {  // this block and the one before hold >= 9 digits
    size_t lo = block >= kBlock ? block - kBlock : 0;
    size_t hi = std::min(n, block + kBlock);
    auto& w = out.digit_windows;
    if (!w.empty() && lo <= w.back().second) {
      w.back().second = std::max(w.back().second, hi);
    } else {
      w.emplace_back(lo, hi);
    }
  };
  auto find_runs = [&](size_t base, uint64_t low, uint64_t high) {  // runs starting in chunk `base`
    uint64_t starts = RunStarts(low, high);
    while (starts != 0) {
      size_t start = base + static_cast<size_t>(__builtin_ctzll(starts));
      if (start >= runs_done_until) {
        size_t b = start, e = start + 24;
        while (b > 0 && kTokenChar[s[b - 1]]) --b;
        while (e < n && kTokenChar[s[e]]) ++e;
        out.token_runs.emplace_back(b, e);
        runs_done_until = e;
      }
      size_t next = std::max(runs_done_until, start + 1);  // drop this start and those inside the run
      if (next >= base + kChunk) break;
      starts &= ~((uint64_t{1} << (next - base)) - 1);
    }
  };

  for (size_t chunk = 0; chunk < n; chunk += kChunk) {
    const unsigned char* p = s + chunk;
    if (chunk + kChunk + 2 > n) {  // the end of the text: pad with bytes that match nothing
      std::memset(padded, 0, sizeof padded);
      std::memcpy(padded, p, std::min(n - chunk, sizeof padded));
      p = padded;
    }
    ChunkMasks m = ClassifyChunk(p);
#if defined(__AVX512BW__) && !defined(HEARTH_SCANNER_NO_SIMD)
    for (uint64_t k = KeywordStarts(p, prefixes); k != 0; k &= k - 1) {
      out.keyword_starts.push_back(chunk + static_cast<size_t>(__builtin_ctzll(k)));
    }
#endif
    if (unsigned dense = DensePairs(previous_digits, m.digits); dense != 0) {
      for (size_t k = 0; k < 4; ++k) {
        if (dense & (1u << k)) mark_digits(chunk + k * kBlock);
      }
    }
    previous_digits = m.digits;
    for (uint64_t at = m.at_signs; at != 0; at &= at - 1)
      out.at_signs.push_back(chunk + static_cast<size_t>(__builtin_ctzll(at)));
    if (!want_token_runs) continue;
    if (chunk > 0 && previous_tokens != 0) find_runs(chunk - kChunk, previous_tokens, m.tokens);
    previous_tokens = m.tokens;
  }
  if (want_token_runs && n > 0) find_runs((n - 1) / kChunk * kChunk, previous_tokens, 0);
  return out;
}

bool IsNumberSeparator(char c) { return c == ' ' || c == '.' || c == '-' || c == '/' || c == '(' || c == ')'; }

// The clusters of digits joined by one or two separators ("4111 1111 1111 1111",
// "+1 (415) 555-0132") that reach into a digit window and hold 9 or more digits. Hex hashes
// fall apart here (letters split their digits); a cluster followed by "-<letter>" is a UUID.
// Returns the merged regions around them, with room before for an IBAN's letters or a phone
// number's '+', for the numeric database.
std::vector<std::pair<size_t, size_t>> NumberClusters(std::string_view t,
                                                      const std::vector<std::pair<size_t, size_t>>& windows) {
  constexpr size_t kBefore = 40, kAfter = 8;
  constexpr unsigned kMinDigits = 9;
  static const std::array<bool, 256> kNumberChar = [] {
    std::array<bool, 256> table{};
    for (int c = 0; c < 256; ++c) table[c] = IsDigit(static_cast<char>(c)) || IsNumberSeparator(static_cast<char>(c));
    return table;
  }();
  const auto* s = reinterpret_cast<const unsigned char*>(t.data());
  const size_t n = t.size();
  std::vector<std::pair<size_t, size_t>> regions;
  size_t done = 0;  // runs before this offset are measured
  for (auto [lo, hi] : windows) {
    // A cluster is inside a run of digits and separators at least 9 long: probe every 9th
    // byte (in hex, letters end such runs within a few bytes).
    size_t i = std::max(lo, done);
    while (i < hi) {
      size_t probe = std::min(i + kMinDigits - 1, hi - 1);
      if (!kNumberChar[s[probe]]) {
        i = probe + 1;
        continue;
      }
      size_t b = probe;
      while (b > done && kNumberChar[s[b - 1]]) --b;  // may start before the window
      size_t run_end = probe + 1;
      while (run_end < n && kNumberChar[s[run_end]]) ++run_end;
      done = run_end;
      i = run_end + 1;
      if (run_end - b < kMinDigits) continue;
      // Clusters inside the run: digit groups joined by at most two separators.
      size_t k = b;
      while (k < run_end) {
        while (k < run_end && !IsDigit(t[k])) ++k;
        if (k >= run_end) break;
        size_t begin = k, e = k;
        unsigned digits = 0;
        for (;;) {
          while (e < run_end && IsDigit(t[e])) {
            ++e;
            ++digits;
          }
          size_t gap = e;
          while (gap < run_end && gap - e < 2 && !IsDigit(t[gap])) ++gap;
          if (gap == e || gap >= run_end || !IsDigit(t[gap])) break;
          e = gap;
        }
        bool uuid_like = e + 1 < n && t[e] == '-' && IsAlpha(t[e + 1]);
        if (digits >= kMinDigits && !uuid_like) {
          size_t rlo = begin > kBefore ? begin - kBefore : 0, rhi = std::min(n, e + kAfter);
          if (!regions.empty() && rlo <= regions.back().second) {
            regions.back().second = std::max(regions.back().second, rhi);
          } else {
            regions.emplace_back(rlo, rhi);
          }
        }
        k = e + 1;
      }
    }
  }
  return regions;
}

// ---------------------------------------------------------------------------------------------

std::string EscapeLiteral(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (IsAlnum(c) || c == '_' || c == ' ') {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    }
  }
  return out;
}

struct Rule {
  std::string name;
  FindingKind kind;
  int priority;  // breaks ties between equally long overlapping findings: lower wins
};

// A Vectorscan pattern and what turns its match end into a finding.
struct Trigger {
  size_t rule;
  std::string pattern;
  unsigned flags;
  Confirm confirm;  // from a report (the end of the pattern) to a finding
};

struct Report {
  unsigned id;
  size_t end;
};

struct Candidate {
  size_t begin, end;
  size_t rule;
};

int CollectReport(unsigned int id, unsigned long long /*from*/, unsigned long long to, unsigned int /*flags*/,
                  void* context) {
  auto* reports = static_cast<std::vector<Report>*>(context);
  reports->push_back(Report{id, static_cast<size_t>(to)});
  return 0;
}

struct SomMatch {
  unsigned id;
  size_t begin, end;
};

int CollectSomMatch(unsigned int id, unsigned long long from, unsigned long long to, unsigned int /*flags*/,
                    void* context) {
  auto* matches = static_cast<std::vector<SomMatch>*>(context);
  matches->push_back(SomMatch{id, static_cast<size_t>(from), static_cast<size_t>(to)});
  return 0;
}

struct CompileError {
  int expression;
  std::string message;
};

hs_database_t* Compile(const std::vector<std::string>& patterns, const std::vector<unsigned>& flags,
                       std::optional<CompileError>& error) {
  std::vector<const char*> expressions;
  std::vector<unsigned> ids;
  for (size_t i = 0; i < patterns.size(); ++i) {
    expressions.push_back(patterns[i].c_str());
    ids.push_back(static_cast<unsigned>(i));
  }
  hs_database_t* db = nullptr;
  hs_compile_error_t* compile_error = nullptr;
  if (hs_compile_multi(expressions.data(), flags.data(), ids.data(), static_cast<unsigned>(patterns.size()),
                       HS_MODE_BLOCK, nullptr, &db, &compile_error) != HS_SUCCESS) {
    error = CompileError{compile_error ? compile_error->expression : -1,
                         compile_error && compile_error->message ? compile_error->message : "unknown error"};
    hs_free_compile_error(compile_error);
    return nullptr;
  }
  return db;
}

// Scratch space is per thread of execution; a pool hands one to each concurrent Scan.
class ScratchPool {
 public:
  ScratchPool() = default;
  ScratchPool(const ScratchPool&) = delete;
  ScratchPool& operator=(const ScratchPool&) = delete;
  ~ScratchPool() {
    for (hs_scratch_t* s : free_) hs_free_scratch(s);
    hs_free_scratch(prototype_);
  }
  void Fit(const hs_database_t* db) {
    if (db != nullptr && hs_alloc_scratch(db, &prototype_) != HS_SUCCESS) throw std::bad_alloc();
  }
  hs_scratch_t* Acquire() {
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        hs_scratch_t* s = free_.back();
        free_.pop_back();
        return s;
      }
    }
    hs_scratch_t* s = nullptr;
    if (hs_clone_scratch(prototype_, &s) != HS_SUCCESS) throw std::bad_alloc();
    return s;
  }
  void Release(hs_scratch_t* s) {
    std::lock_guard lock(mutex_);
    free_.push_back(s);
  }

 private:
  std::mutex mutex_;
  std::vector<hs_scratch_t*> free_;
  hs_scratch_t* prototype_ = nullptr;
};

class ScratchLease {
 public:
  explicit ScratchLease(ScratchPool& pool) : pool_(pool), scratch_(pool.Acquire()) {}
  ~ScratchLease() { pool_.Release(scratch_); }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  hs_scratch_t* get() const { return scratch_; }

 private:
  ScratchPool& pool_;
  hs_scratch_t* scratch_;
};

// ---------------------------------------------------------------------------------------------
// Glob matching (memoised, so patterns with many stars stay polynomial on long paths).

class GlobMatcher {
 public:
  GlobMatcher(std::string_view p, std::string_view s) : p_(p), s_(s), memo_((p.size() + 1) * (s.size() + 1), -1) {}
  bool Match(size_t pi, size_t si) {
    int8_t& m = memo_[pi * (s_.size() + 1) + si];
    if (m < 0) m = Compute(pi, si) ? 1 : 0;
    return m == 1;
  }

 private:
  bool Compute(size_t pi, size_t si) {
    if (pi == p_.size()) return si == s_.size();
    // "dir/**" at the end: the directory itself or anything below it.
    if (p_.substr(pi) == "/**") return si == s_.size() || s_[si] == '/';
    char c = p_[pi];
    if (c == '*') {
      bool double_star = pi + 1 < p_.size() && p_[pi + 1] == '*';
      bool segment_start = pi == 0 || p_[pi - 1] == '/';
      if (double_star && segment_start) {
        size_t after = pi + 2;
        if (after == p_.size()) return true;  // "**": everything
        if (p_[after] == '/') {
          // "**/": zero or more whole directories.
          if (Match(after + 1, si)) return true;
          for (size_t j = si; j < s_.size(); ++j) {
            if (s_[j] == '/' && Match(after + 1, j + 1)) return true;
          }
          return false;
        }
      }
      size_t next = double_star ? pi + 2 : pi + 1;  // a "**" inside a segment is a plain "*"
      for (size_t j = si;; ++j) {
        if (Match(next, j)) return true;
        if (j == s_.size() || s_[j] == '/') return false;
      }
    }
    if (si == s_.size()) return false;
    if (c == '?') return s_[si] != '/' && Match(pi + 1, si + 1);
    return s_[si] == c && Match(pi + 1, si + 1);
  }

  std::string_view p_, s_;
  std::vector<int8_t> memo_;
};

std::string NormalizePath(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '\\') c = '/';
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out += c;
  }
  while (StartsWith(out, "./")) out.erase(0, 2);
  return out;
}

}  // namespace

bool GlobMatch(std::string_view pattern, std::string_view path) {
  GlobMatcher matcher(pattern, path);
  return matcher.Match(0, 0);
}

// ---------------------------------------------------------------------------------------------

struct Scanner::Impl {
  std::vector<Rule> rules;
  std::vector<std::string> rule_names;
  std::vector<std::string> sensitive_paths;
  std::vector<Trigger> anchors;       // literals over the whole text
  std::vector<Trigger> numeric;       // digit patterns, only around long clusters of digits
  std::vector<size_t> custom_rule;    // per custom pattern: its rule
  std::vector<size_t> custom_window;  // per custom pattern: how far back its start can be
  bool high_entropy = false;
  size_t high_entropy_rule = 0;
  size_t email_rule = 0;
  size_t secret_rule = 0, aws_secret_rule = 0, nhs_rule = 0, mrn_rule = 0;
  std::vector<std::string> mrn_labels;    // lowercase; those the prefilter finds
  std::vector<Prefix3> keyword_prefixes;  // what the prefilter looks for (kKeywordsInPrefilter)
  hs_database_t* anchor_db = nullptr;     // the anchors, then the custom patterns (ids from anchors.size())
  hs_database_t* numeric_db = nullptr;
  hs_database_t* som_db = nullptr;  // the custom patterns with start of match, run only on windows
  mutable ScratchPool scratch;

  ~Impl() {
    hs_free_database(anchor_db);
    hs_free_database(numeric_db);
    hs_free_database(som_db);
  }

  size_t AddRule(std::string name, FindingKind kind, int priority) {
    rules.push_back(Rule{std::move(name), kind, priority});
    rule_names.push_back(rules.back().name);
    return rules.size() - 1;
  }
  void AddAnchor(size_t rule, std::string_view literal, Confirm confirm) {
    anchors.push_back(Trigger{rule, EscapeLiteral(literal), 0, std::move(confirm)});
  }
  // Case-insensitive literals: names are snake_case, SCREAMING_CASE, camelCase or PascalCase.
  // (Vectorscan is faster with caseless literals than with each case form spelled out.)
  void AddAnchorCaseless(size_t rule, std::string_view literal,
                         const std::function<Verdict(std::string_view, size_t, size_t)>& confirm) {
    size_t len = literal.size();
    anchors.push_back(Trigger{rule, EscapeLiteral(literal), HS_FLAG_CASELESS,
                              [confirm, len](std::string_view t, size_t end) { return confirm(t, end, len); }});
  }
  void AddToken(size_t rule, std::string_view prefix, TokenShape shape) {
    shape.trigger_len = prefix.size();
    AddAnchor(rule, prefix, [shape](std::string_view t, size_t end) { return ConfirmToken(t, end, shape); });
  }
  void AddNumeric(size_t rule, std::string pattern, Confirm confirm) {
    numeric.push_back(Trigger{rule, std::move(pattern), 0, std::move(confirm)});
  }

  void AddBuiltins(const ScannerConfig& config);
  void Build(const ScannerConfig& config);
  void ProcessReports(std::string_view text, const std::vector<Trigger>& triggers, const std::vector<Report>& reports,
                      std::vector<Candidate>& out, std::vector<std::vector<size_t>>* custom_ends) const;
  void ConfirmCustom(std::string_view text, size_t custom, const std::vector<size_t>& ends, hs_scratch_t* s,
                     std::vector<Candidate>& out) const;
};

void Scanner::Impl::AddBuiltins(const ScannerConfig& config) {
  constexpr auto S = FindingKind::kSecret;
  constexpr auto P = FindingKind::kPersonalData;

  // Secrets with a vendor prefix: exact shapes, so they win ties against the generic rules.
  size_t r = AddRule("aws_access_key_id", S, 0);
  for (std::string_view prefix : {"AKIA", "ASIA", "ABIA", "ACCA"}) AddToken(r, prefix, {0, IsUpperOrDigit, 20, 20});
  const size_t aws_secret = AddRule("aws_secret_access_key", S, 0);  // found through the secret words below

  r = AddRule("github_token", S, 0);
  for (std::string_view prefix : {"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}) AddToken(r, prefix, {0, IsAlnum, 40, 255});
  AddToken(r, "github_pat_", {0, IsWord, 81, 255});

  r = AddRule("gitlab_token", S, 0);
  AddToken(r, "glpat-", {0, IsB64Url, 26, 64});

  r = AddRule("slack_token", S, 0);
  for (std::string_view prefix : {"xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"})
    AddToken(r, prefix, {0, IsAlnumOrDash, 20, 255});

  r = AddRule("stripe_key", S, 0);
  for (std::string_view prefix : {"sk_live_", "rk_live_"}) AddToken(r, prefix, {0, IsAlnum, 28, 255});

  r = AddRule("google_api_key", S, 0);
  AddToken(r, "AIza", {0, IsB64Url, 39, 39});

  r = AddRule("openai_api_key", S, 0);  // sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...
  AddToken(r, "sk-", {0, IsB64Url, 40, 255, LooksLikeOpenAiKey});

  r = AddRule("anthropic_api_key", S, 0);
  AddToken(r, "sk-ant-", {0, IsB64Url, 50, 255, IsAnthropicShape});

  r = AddRule("private_key", S, 0);
  AddAnchor(r, "-----BEGIN ", FromPemHeader);

  r = AddRule("jwt", S, 0);
  AddAnchor(r, "eyJ", FromJwtStart);

  r = AddRule("url_password", S, 1);
  AddAnchor(r, "://", FromSchemeSeparator);

  secret_rule = AddRule("secret_assignment", S, 5);
  aws_secret_rule = aws_secret;
  if (!kKeywordsInPrefilter) {
    for (std::string_view word : kSecretWords) {
      AddAnchorCaseless(secret_rule, word, [aws_secret](std::string_view t, size_t end, size_t) {
        return FromSecretWord(t, end, aws_secret);
      });
    }
  }

  if (config.high_entropy) {
    high_entropy = true;
    high_entropy_rule = AddRule("high_entropy_token", S, 9);  // found by RunPrefilter, not Vectorscan
  }

  // Personal data.
  email_rule = AddRule("email", P, 2);  // every '@' comes from RunPrefilter

  r = AddRule("iban", P, 2);
  AddNumeric(r, R"(\b[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4})", ConfirmIban);

  r = AddRule("card_number", P, 2);
  AddNumeric(r, R"(\b[2-6][0-9]{3}(?:[ \-]?[0-9]){9})", ConfirmCard);

  r = AddRule("us_ssn", P, 2);
  AddNumeric(r, R"(\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b)", ConfirmSsn);

  nhs_rule = AddRule("uk_nhs_number", P, 2);
  AddNumeric(nhs_rule, R"(\b[0-9]{3}[ \-][0-9]{3}[ \-][0-9]{4}\b)", ConfirmNhsGrouped);
  if (!kKeywordsInPrefilter) {
    AddAnchorCaseless(nhs_rule, kNhsWord, [](std::string_view t, size_t end, size_t) { return FromNhsLabel(t, end); });
  }

  r = AddRule("phone_number", P, 3);
  AddNumeric(r, R"(\+[1-9][0-9 .\-()]{6,24}[0-9])", ConfirmPhoneE164);
  AddNumeric(r, R"(\b[2-9][0-9]{2}[\-. ][2-9][0-9]{2}[\-. ][0-9]{4}\b)", ConfirmPhoneNanp);
  AddNumeric(r, R"(\([2-9][0-9]{2}\) ?[2-9][0-9]{2}[\-. ][0-9]{4}\b)", ConfirmPhoneNanpParen);
  AddNumeric(r, R"(\b0[1-9][0-9]{1,3}[ \-/][0-9]{3,4}[ \-]?[0-9]{3,4}\b)", ConfirmPhoneNational);
  AddNumeric(r, R"(\b0[1-9](?:[ .][0-9]{2}){4}\b)", ConfirmPhoneFrench);

  bool any_label =
      std::any_of(config.mrn_labels.begin(), config.mrn_labels.end(), [](const std::string& l) { return !l.empty(); });
  if (any_label) {
    mrn_rule = AddRule("medical_record_number", P, 2);
    for (const std::string& label : config.mrn_labels) {
      if (kKeywordsInPrefilter && label.size() >= 3) {
        mrn_labels.push_back(Lowercase(label));
      } else if (!label.empty()) {
        AddAnchorCaseless(mrn_rule, label, FromMrnLabel);
      }
    }
  }
  if (kKeywordsInPrefilter) {
    for (std::string_view w : kKeywordPrefixes) keyword_prefixes.push_back({w[0], w[1], w[2]});
    for (const std::string& label : mrn_labels) {
      Prefix3 prefix = {ToLower(label[0]), ToLower(label[1]), ToLower(label[2])};
      if (std::find(keyword_prefixes.begin(), keyword_prefixes.end(), prefix) == keyword_prefixes.end()) {
        keyword_prefixes.push_back(prefix);
      }
    }
  }
}

void Scanner::Impl::Build(const ScannerConfig& config) {
  AddBuiltins(config);
  for (const CustomPattern& custom : config.custom) {
    if (custom.name.empty())
      throw std::invalid_argument("custom pattern with regex \"" + custom.regex + "\" has no name");
    custom_rule.push_back(AddRule(custom.name, custom.kind, 4));
  }
  auto custom_error = [&](size_t index, const std::string& message) {
    const CustomPattern& c = config.custom[index];
    return std::invalid_argument("custom pattern \"" + c.name + "\" (" + c.regex + ") does not compile: " + message);
  };
  auto compile_builtin = [&](const std::vector<Trigger>& triggers, const char* what) {
    std::vector<std::string> patterns;
    std::vector<unsigned> flags;
    for (const Trigger& t : triggers) {
      patterns.push_back(t.pattern);
      flags.push_back(t.flags);
    }
    std::optional<CompileError> error;
    hs_database_t* db = Compile(patterns, flags, error);
    if (db == nullptr) {
      throw std::logic_error(std::string("built-in ") + what + " pattern " + std::to_string(error->expression) +
                             " does not compile: " + error->message);
    }
    scratch.Fit(db);
    return db;
  };
  numeric_db = compile_builtin(numeric, "numeric");

  // Each custom pattern alone first, so an error names the right one even where Vectorscan
  // reports an error for the database as a whole.
  std::vector<std::string> custom_patterns;
  for (size_t i = 0; i < config.custom.size(); ++i) {
    std::optional<CompileError> error;
    hs_database_t* probe = Compile({config.custom[i].regex}, {HS_FLAG_SOM_LEFTMOST}, error);
    if (probe == nullptr) throw custom_error(i, error->message);
    hs_free_database(probe);
    hs_expr_info_t* info = nullptr;
    hs_compile_error_t* info_error = nullptr;
    size_t window = 4096;  // unbounded patterns: starts further back than this are clipped
    if (hs_expression_info(config.custom[i].regex.c_str(), 0, &info, &info_error) == HS_SUCCESS && info != nullptr) {
      if (info->max_width != UINT_MAX) window = std::min<size_t>(window, info->max_width);
      std::free(info);
    }
    hs_free_compile_error(info_error);
    custom_window.push_back(window);
    custom_patterns.push_back(config.custom[i].regex);
  }
  // The custom patterns share the anchors' database: one pass over the text instead of two.
  std::vector<std::string> patterns;
  std::vector<unsigned> flags;
  for (const Trigger& t : anchors) {
    patterns.push_back(t.pattern);
    flags.push_back(t.flags);
  }
  for (const std::string& regex : custom_patterns) {
    patterns.push_back(regex);
    flags.push_back(0);
  }
  std::optional<CompileError> error;
  anchor_db = Compile(patterns, flags, error);
  if (anchor_db == nullptr) {
    if (error->expression >= static_cast<int>(anchors.size())) {
      throw custom_error(static_cast<size_t>(error->expression) - anchors.size(), error->message);
    }
    throw std::logic_error("built-in anchor pattern " + std::to_string(error->expression) +
                           " does not compile: " + error->message);
  }
  scratch.Fit(anchor_db);
  if (!custom_patterns.empty()) {
    som_db = Compile(custom_patterns, std::vector<unsigned>(custom_patterns.size(), HS_FLAG_SOM_LEFTMOST), error);
    if (som_db == nullptr)
      throw custom_error(error->expression >= 0 ? static_cast<size_t>(error->expression) : 0, error->message);
    scratch.Fit(som_db);
  }
}

// Reports in order of end offset; per trigger, reports inside a candidate already examined are
// skipped. Ids past the triggers are custom patterns: their ends are collected.
void Scanner::Impl::ProcessReports(std::string_view text, const std::vector<Trigger>& triggers,
                                   const std::vector<Report>& reports, std::vector<Candidate>& out,
                                   std::vector<std::vector<size_t>>* custom_ends) const {
  std::vector<size_t> resume(triggers.size(), 0);
  for (const Report& r : reports) {
    if (r.id >= triggers.size()) {
      if (custom_ends != nullptr) (*custom_ends)[r.id - triggers.size()].push_back(r.end);
      continue;
    }
    if (r.end <= resume[r.id]) continue;
    const Trigger& trigger = triggers[r.id];
    Verdict v = trigger.confirm(text, r.end);
    resume[r.id] = std::max(resume[r.id], v.resume);
    if (v.found && v.end > v.begin)
      out.push_back(Candidate{v.begin, v.end, v.rule != SIZE_MAX ? v.rule : trigger.rule});
  }
}

// Custom patterns have no hand-written confirmation: their exact start comes from the SOM
// database, run only on windows that end at the reported match ends.
void Scanner::Impl::ConfirmCustom(std::string_view text, size_t custom, const std::vector<size_t>& ends,
                                  hs_scratch_t* s, std::vector<Candidate>& out) const {
  size_t window = custom_window[custom];
  size_t i = 0;
  while (i < ends.size()) {
    // Merge reports whose windows touch into one scan.
    size_t lo = ends[i] > window ? ends[i] - window : 0, hi = ends[i];
    size_t j = i + 1;
    while (j < ends.size() && (ends[j] > window ? ends[j] - window : 0) <= hi) hi = ends[j++];
    std::vector<SomMatch> matches;
    hs_scan(som_db, text.data() + lo, static_cast<unsigned>(hi - lo), 0, s, CollectSomMatch, &matches);
    for (const SomMatch& m : matches) {
      if (m.id != custom || m.begin == m.end) continue;
      size_t end = lo + m.end;
      if (!std::binary_search(ends.begin() + i, ends.begin() + j, end)) continue;  // a window-edge artifact
      out.push_back(Candidate{lo + m.begin, end, custom_rule[custom]});
    }
    i = j;
  }
}

Scanner::Scanner(const ScannerConfig& config) : impl_(std::make_unique<Impl>()) {
  impl_->Build(config);
  for (const std::string& p : config.sensitive_paths) {
    std::string n = NormalizePath(p);
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    if (!n.empty()) impl_->sensitive_paths.push_back(n);
  }
}

Scanner::~Scanner() = default;

const std::vector<std::string>& Scanner::rule_names() const { return impl_->rule_names; }

namespace {

// Block mode takes at most 4 GiB; larger texts go in overlapping blocks (a match longer than the
// overlap across a block boundary could be missed; nothing we look for is).
std::vector<Report> ScanAll(const hs_database_t* db, std::string_view text, hs_scratch_t* scratch) {
  constexpr size_t kBlock = size_t{1} << 30, kOverlap = size_t{1} << 16;
  std::vector<Report> reports;
  if (text.size() <= kBlock) {
    hs_scan(db, text.data(), static_cast<unsigned>(text.size()), 0, scratch, CollectReport, &reports);
    return reports;
  }
  for (size_t base = 0; base < text.size();) {
    size_t len = std::min(kBlock, text.size() - base);
    std::vector<Report> block;
    hs_scan(db, text.data() + base, static_cast<unsigned>(len), 0, scratch, CollectReport, &block);
    for (const Report& r : block) {
      if (reports.empty() || r.end + base > reports.back().end) reports.push_back(Report{r.id, r.end + base});
    }
    if (base + len == text.size()) break;
    base += len - kOverlap;
  }
  return reports;
}

}  // namespace

std::vector<Finding> Scanner::Scan(std::string_view text) const {
  if (text.empty()) return {};
  const Impl& impl = *impl_;
  ScratchLease scratch(impl.scratch);
  std::vector<Candidate> candidates;

  auto by_end = [](std::vector<Report>& reports) {  // Vectorscan may report regex matches out of order
    auto earlier = [](const Report& a, const Report& b) { return a.end < b.end; };
    if (!std::is_sorted(reports.begin(), reports.end(), earlier))
      std::stable_sort(reports.begin(), reports.end(), earlier);
  };

  // 1. Literal anchors (and where custom patterns end) over the whole text.
  std::vector<Report> reports = ScanAll(impl.anchor_db, text, scratch.get());
  by_end(reports);
  std::vector<std::vector<size_t>> custom_ends(impl.custom_rule.size());
  impl.ProcessReports(text, impl.anchors, reports, candidates, &custom_ends);

  // 2. Digit patterns only around long clusters of digits. Regions start anywhere, so a '\b' at
  //    a region edge may hold where it does not in the text: the confirmations recheck the
  //    neighbours.
  Prefilter prefilter = RunPrefilter(text, impl.high_entropy, impl.keyword_prefixes);
  std::vector<Report> numeric;
  for (auto [lo, hi] : NumberClusters(text, prefilter.digit_windows)) {
    std::vector<Report> window;
    hs_scan(impl.numeric_db, text.data() + lo, static_cast<unsigned>(hi - lo), 0, scratch.get(), CollectReport,
            &window);
    for (const Report& r : window) numeric.push_back(Report{r.id, r.end + lo});
  }
  by_end(numeric);
  impl.ProcessReports(text, impl.numeric, numeric, candidates, nullptr);

  // 3. Secret words, "NHS" and MRN labels where the prefilter found them (AVX-512 builds),
  //    e-mail addresses around each '@', and random-looking tokens in value context.
  for (size_t start : prefilter.keyword_starts) {
    auto is_at = [&](std::string_view word) {
      if (text.size() - start < word.size()) return false;
      for (size_t k = 0; k < word.size(); ++k) {
        if (ToLower(text[start + k]) != word[k]) return false;
      }
      return true;
    };
    for (std::string_view word : kSecretWords) {
      if (!is_at(word)) continue;
      Verdict v = FromSecretWord(text, start + word.size(), impl.aws_secret_rule);
      if (v.found) candidates.push_back(Candidate{v.begin, v.end, v.rule != SIZE_MAX ? v.rule : impl.secret_rule});
      break;
    }
    if (is_at(kNhsWord)) {
      Verdict v = FromNhsLabel(text, start + kNhsWord.size());
      if (v.found) candidates.push_back(Candidate{v.begin, v.end, impl.nhs_rule});
    }
    for (const std::string& label : impl.mrn_labels) {
      if (!is_at(label)) continue;
      Verdict v = FromMrnLabel(text, start + label.size(), label.size());
      if (v.found) candidates.push_back(Candidate{v.begin, v.end, impl.mrn_rule});
    }
  }
  size_t email_resume = 0;
  for (size_t at : prefilter.at_signs) {
    if (at < email_resume) continue;
    Verdict v = ConfirmEmail(text, at + 1);
    email_resume = v.resume;
    if (v.found) candidates.push_back(Candidate{v.begin, v.end, impl.email_rule});
  }
  for (auto [b, e] : prefilter.token_runs) {
    Verdict v = ConfirmHighEntropy(text, b, e);
    if (v.found) candidates.push_back(Candidate{v.begin, v.end, impl.high_entropy_rule});
  }

  // 4. Custom patterns: where they start, for the ends step 1 found.
  for (size_t c = 0; c < custom_ends.size(); ++c) {
    std::vector<size_t>& ends = custom_ends[c];
    std::sort(ends.begin(), ends.end());
    ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
    if (!ends.empty()) impl.ConfirmCustom(text, c, ends, scratch.get(), candidates);
  }

  // Longest first (then the more specific rule, then the earlier one); keep what does not overlap.
  std::sort(candidates.begin(), candidates.end(), [&](const Candidate& a, const Candidate& b) {
    size_t la = a.end - a.begin, lb = b.end - b.begin;
    if (la != lb) return la > lb;
    int pa = impl.rules[a.rule].priority, pb = impl.rules[b.rule].priority;
    if (pa != pb) return pa < pb;
    if (a.begin != b.begin) return a.begin < b.begin;
    return a.rule < b.rule;
  });
  std::map<size_t, size_t> taken;  // begin -> end
  for (const Candidate& c : candidates) {
    auto next = taken.lower_bound(c.begin);
    if (next != taken.end() && next->first < c.end) continue;
    if (next != taken.begin() && std::prev(next)->second > c.begin) continue;
    taken.emplace(c.begin, c.end);
  }
  std::vector<Finding> findings;
  findings.reserve(taken.size());
  for (const Candidate& c : candidates) {
    auto it = taken.find(c.begin);
    if (it == taken.end() || it->second != c.end) continue;
    const Rule& rule = impl.rules[c.rule];
    findings.push_back(Finding{rule.name, rule.kind, c.begin, c.end - c.begin});
    taken.erase(it);  // identical duplicates from several triggers: keep the first
  }
  std::sort(findings.begin(), findings.end(), [](const Finding& a, const Finding& b) { return a.offset < b.offset; });
  return findings;
}

bool Scanner::IsSensitivePath(std::string_view raw_path) const {
  std::string path = NormalizePath(raw_path);
  if (path.empty()) return false;
  for (const std::string& pattern : impl_->sensitive_paths) {
    if (pattern.front() == '/') {
      if (GlobMatch(pattern, path.front() == '/' ? path : "/" + path)) return true;
      continue;
    }
    if (pattern.find('/') == std::string::npos) {
      // Any single segment, at any depth.
      size_t start = 0;
      while (start <= path.size()) {
        size_t slash = path.find('/', start);
        size_t stop = slash == std::string::npos ? path.size() : slash;
        if (stop > start && GlobMatch(pattern, std::string_view(path).substr(start, stop - start))) return true;
        if (slash == std::string::npos) break;
        start = slash + 1;
      }
      continue;
    }
    // The whole path or any tail that starts at a segment.
    for (size_t start = 0; start < path.size();) {
      if (GlobMatch(pattern, std::string_view(path).substr(start))) return true;
      size_t slash = path.find('/', start);
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
  }
  return false;
}

}  // namespace hearth::router
