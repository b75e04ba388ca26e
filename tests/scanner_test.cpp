// Scanner, Redaction and Restorer. Every fake credential below is split into adjacent string
// literals ("gh" "p_...") so that this file itself does not trip secret scanners (ours included,
// or a forge's push protection); the compiler joins them.
#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "router/redactor.h"
#include "router/scanner.h"

namespace hearth::router {
namespace {

const Scanner& Default() {
  static const Scanner scanner{ScannerConfig{}};
  return scanner;
}

// The (rule, matched text) pairs, in order.
std::vector<std::pair<std::string, std::string>> Found(std::string_view text, const Scanner& scanner = Default()) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Finding& f : scanner.Scan(text)) out.emplace_back(f.rule, std::string(text.substr(f.offset, f.length)));
  return out;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

// Exactly one finding, of `rule`, covering exactly `value` inside `text`.
void ExpectOne(const std::string& text, const std::string& rule, const std::string& value) {
  EXPECT_EQ(Found(text), (Pairs{{rule, value}})) << "in: " << text;
}

void ExpectNone(const std::string& text, const Scanner& scanner = Default()) {
  EXPECT_EQ(Found(text, scanner), Pairs{}) << "in: " << text;
}

// ---- secrets ------------------------------------------------------------------------------

TEST(ScannerSecrets, AwsAccessKeyId) {
  const std::string key = "AKIA" "IOSFODNN7EXAMPLE";
  ExpectOne("aws_access_key_id = " + key + "\n", "aws_access_key_id", key);
  ExpectOne("creds: {\"AccessKeyId\": \"" + std::string("ASIA" "Y34FZKBOKMUTVV7A") + "\"}", "aws_access_key_id",
            "ASIA" "Y34FZKBOKMUTVV7A");
  ExpectNone("AKIA" "IOSFODNN7EXAMPLE2 is too long; xAKIA" "IOSFODNN7EXAMPLE is inside a word");
  ExpectNone("const char* kAkiaPrefix = \"AKIA\";");
}

TEST(ScannerSecrets, AwsSecretAccessKey) {
  const std::string secret = "wJalrXUtnFEMI/K7MDENG/" "bPxRfiCYEXAMPLEKEY";
  ExpectOne("aws_secret_access_key = " + secret + "\n", "aws_secret_access_key", secret);
  ExpectOne("{\"SecretAccessKey\": \"" + secret + "\"}", "aws_secret_access_key", secret);
  ExpectOne("export AWS_SECRET_ACCESS_KEY=" + secret + "\n", "aws_secret_access_key", secret);
  // The same 40 characters without the assignment context are just a string.
  ExpectNone("see the docs for " + secret.substr(0, 30));
}

TEST(ScannerSecrets, GithubTokens) {
  for (std::string prefix : {"gh" "p_", "gh" "o_", "gh" "u_", "gh" "s_", "gh" "r_"}) {
    const std::string token = prefix + "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
    ExpectOne("git clone https://x-access-token:" + token + "@github.com/org/repo", "github_token", token);
  }
  const std::string pat = "github" "_pat_KLzdocJ2isAjIhKtJ0RlgL_KOmxgJTeKdNnFRIBXuDL7DxtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9QeWJK";
  ExpectOne("GH_TOKEN=" + pat + "\n", "github_token", pat);
  ExpectNone("ghp_short and ghx_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d and github_pattern_matcher");
}

TEST(ScannerSecrets, GitlabSlackStripeGoogle) {
  const std::string gitlab = "gl" "pat-Y40uvSwMFLZDe1f8rESQ";
  ExpectOne("PRIVATE-TOKEN: " + gitlab, "gitlab_token", gitlab);
  const std::string slack = "xo" "xb-2048613754-4096817253-kQ7vXz2LmR9tB4nW8cYdJ3sF";
  ExpectOne("client = WebClient(" + slack + ")", "slack_token", slack);
  const std::string stripe = "sk" "_live_4eC39HqLyjWDarjtT1zdp7dc";
  ExpectOne("stripe.api_key = " + stripe + "\n", "stripe_key", stripe);
  const std::string restricted = "rk" "_live_51H8xYzAbCdEfGh12345678";
  ExpectOne("key=" + restricted + " ", "stripe_key", restricted);
  const std::string google = "AI" "zaihN5KXSc7Tvo-hBKqFYY-kv5ZJr3J1TWDtk";
  ExpectOne("fetch(`https://maps.example.com/api?key=" + google + "`)", "google_api_key", google);
  ExpectNone("sk_test_4eC39HqLyjWDarjtT1zdp7dc xoxb-123 glpat-short AIzaTooShort");
}

TEST(ScannerSecrets, OpenAiAndAnthropic) {
  const std::string project = "sk" "-proj-wtDDb_xHKas1VOqg6YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po_799NksnRH9ucAUsdMlHUvTCQCyEZDz-"
                              "TddJ8HyS5SUkCnD8zRA9a9SkpXz9w3QlY7Zkuvq";
  ExpectOne("client = OpenAI(api_key=\"" + project + "\")", "openai_api_key", project);
  const std::string legacy = "sk" "-bjL5DZPjN0MEQ7wjJJibT3BlbkFJaZUPgHV7iB3m03nbqnsG";
  ExpectOne("Authorization: Bearer " + legacy, "openai_api_key", legacy);
  const std::string anthropic = "sk" "-ant-api03-EPH1qhT61qtc4xatws8phP9nhFyJfm5di4PzJ59FHz5r1pY4OjE2jBMptUsGr7CmY_uCu3ZR1"
                                "zTOlUcR64cXQLioDnkHIAA";
  ExpectOne("x-api-key: " + anthropic, "anthropic_api_key", anthropic);
  // CSS classes and kebab-case names that merely start with "sk-".
  ExpectNone("<div class=\"sk-loading-spinner-container-large-variant\"></div> sk-learn-compatible-estimator-wrapper");
}

TEST(ScannerSecrets, PrivateKeyBlock) {
  const std::string pem =
      "-----BEGIN RSA " "PRIVATE KEY-----\n"
      "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
      "aFDrBz9vFqU4yXLpV7vJ3lqd8YtPZx3GQKxRjrw0s8Y7xGJvwvP1vEqtN6XwI2H1\n"
      "-----END RSA " "PRIVATE KEY-----";
  ExpectOne("key.pem:\n" + pem + "\nnext line", "private_key", pem);
  const std::string openssh = "-----BEGIN OPENSSH " "PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\\n-----END OPENSSH "
                              "PRIVATE KEY-----";
  ExpectOne("const char* kKey = \"" + openssh + "\\n\";", "private_key", openssh);
  // Truncated paste: the header and the base64 body that follows.
  const std::string truncated = "-----BEGIN EC " "PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5\n";
  ExpectOne(truncated + "\n...", "private_key", truncated.substr(0, truncated.size() - 1));
  ExpectNone("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
             "-----BEGIN CERTIFICATE-----\n");
  ExpectNone("const pem = '-----BEGIN " "PRIVATE KEY-----\\nXXXX\\nXXXX\\n-----END " "PRIVATE KEY-----';");  // a placeholder body
}

TEST(ScannerSecrets, Jwt) {
  const std::string jwt = "ey" "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
                          "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  ExpectOne("Authorization: Bearer " + jwt + "\n", "jwt", jwt);
  // Three base64url parts whose header is JSON without "alg" is not a JWT: {"foo":"bar"}.
  ExpectNone("value: eyJmb28iOiJiYXIifQ.eyJhIjoxfQ.abcdefghijkl");
  // Dotted names.
  ExpectNone("com.example.service.internal.handler");
}

TEST(ScannerSecrets, UrlPassword) {
  ExpectOne("DATABASE_URL=postgres://app_user:Xk9mP2vLq7@db.internal:5432/app", "url_password", "Xk9mP2vLq7");
  ExpectOne("redis://:s3cr3tR3dis@cache:6379/0", "url_password", "s3cr3tR3dis");
  ExpectOne("url = \"https://deploy:Tz8#Qw2!@registry.example.com/v2/\"", "url_password", "Tz8#Qw2!");
  ExpectNone("postgres://user:password@localhost/db and postgres://user:${DB_PASSWORD}@host/db");
  ExpectNone("http://localhost:8080/path?a=b git+ssh://git@github.com/org/repo.git mongodb://mongo:27017");
}

TEST(ScannerSecrets, SecretAssignments) {
  ExpectOne("DB_PASSWORD=Tr0ub4dor&3\n", "secret_assignment", "Tr0ub4dor&3");
  ExpectOne("export SERVICE_TOKEN=9f8e7d6c5b4a3f2e1d0c\n", "secret_assignment", "9f8e7d6c5b4a3f2e1d0c");
  ExpectOne("{\"client_secret\": \"q8Zf!2kLm#9Rt\"}", "secret_assignment", "q8Zf!2kLm#9Rt");
  ExpectOne("SECRET_KEY = 'django-insecure-7hk2x9q'\n", "secret_assignment", "django-insecure-7hk2x9q");
  ExpectOne("database:\n  password: hunter22\n", "secret_assignment", "hunter22");
  ExpectOne("conn = connect(host=h, password=\"Passw0rd!\")", "secret_assignment", "Passw0rd!");
  ExpectOne("$apiKey => 'ab12cd34ef56',", "secret_assignment", "ab12cd34ef56");
  // Code, types, names, placeholders, numbers, prose.
  ExpectNone("token = tokens[i]\n"
             "max_tokens: 4096\n"
             "def login(user: str, password: str) -> bool:\n"
             "password: str\n"
             "tokenizer: bert-base-uncased\n"
             "PWD=/home/user/project\n"
             "api_key = os.environ[\"API_KEY\"]\n"
             "password = \"Password must be at least 8 characters\"\n"
             "TOKEN_TYPE = \"Bearer\"\n"
             "secretName: my-secret\n"
             "API_KEY = \"YOUR_API_KEY\"\n"
             "SECRET = \"changeme\"\n"
             "export GITHUB_TOKEN=$(gh auth token)\n"
             "token: ${{ secrets.GITHUB_TOKEN }}\n"
             "password = \"********\"\n"
             "if (token == \"abc123xyz\") {}\n"
             "subject_token_type: 'urn:ietf:params:oauth:token-type:jwt'\n"
             " private:\n  int token_count_ = 0;\n"
             "private: int x_;\n"
             "const auto secret_len = secret.size();\n");
}

TEST(ScannerSecrets, HighEntropyTokens) {
  ExpectOne("client_id = \"c5XlrWi0B26R08qzjI6GKFSufrdZSlB5\"\n", "high_entropy_token", "c5XlrWi0B26R08qzjI6GKFSufrdZSlB5");
  ExpectOne("session: jIclHkCiHp6bR1IqfEouHgxzNNAL5wIScGebcy8F==\n", "high_entropy_token",
            "jIclHkCiHp6bR1IqfEouHgxzNNAL5wIScGebcy8F==");
  ScannerConfig off;
  off.high_entropy = false;
  Scanner without(off);
  ExpectNone("client_id = \"c5XlrWi0B26R08qzjI6GKFSufrdZSlB5\"\n", without);
}

// The heuristics that keep names out must not keep random tokens out: measure the catch rate
// on random base64 in value context (docs/privacy.md quotes these figures).
TEST(ScannerSecrets, HighEntropyCatchesMostRandomTokens) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::mt19937 rng(7);
  for (auto [length, at_least] : {std::pair<int, int>{24, 90}, {32, 95}, {40, 94}, {64, 98}}) {
    int caught = 0;
    for (int i = 0; i < 1000; ++i) {
      std::string token;
      for (int k = 0; k < length; ++k) token += alphabet[rng() % alphabet.size()];
      auto findings = Default().Scan("client_ref = \"" + token + "\"\n");
      caught += findings.size() == 1 && findings[0].length == token.size() ? 1 : 0;
    }
    EXPECT_GE(caught, at_least * 10) << "random base64 of length " << length;
  }
}

TEST(ScannerSecrets, OrdinaryCodeIsNotFlagged) {
  ExpectNone(
      "commit = \"9fceb02d0ae598e95dc970b74767f19372d61af8\"\n"                   // git SHA
      "id: 550e8400-e29b-41d4-a716-446655440000\n"                               // UUID
      "const char* kUuid = \"123e4567-e89b-12d3-a456-426614174000\";\n"
      "img.src = \"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==\";\n"
      "\"integrity\": \"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==\",\n"
      "checksum = \"4d2b0f8a1c6e9b3d7f5a2c8e0b4d6f1a3c5e7b9d2f4a6c8e0b1d3f5a7c9e2b4d\"\n"
      "github.com/pkg/errors v0.9.1 h1:FEBLx1zS214owpjy7qsBeixbURkuhQAwrK5UwLGTwt4=\n"
      "constexpr uint64_t kMagic = 0xDEADBEEFCAFEBABEull; uint32_t mask = 0x7FFFFFFF;\n"
      "static const char* kName = \"HearthRouterScannerTestCase\";\n"
      "def get_user_account_settings_v2(self, request_context_object): pass\n"
      "AVX512VNNI_BF16_SUPPORTED = \"AVX512VNNIBF16Support2024\"\n"
      "version: \"1.2.3-beta.4\"  # released 2024-11-22 06:29:14\n"
      "path = \"/usr/local/lib/python3.11/site-packages/numpy/core\"\n"
      "ts = 1700000000123; port = 8080; n = 4096; pi = 3.14159265358979323846;\n"
      "std::vector<int> v{10, 20, 30}; auto x = a @ b.T;\n"
      "@app.route(\"/api/v1/users/<int:user_id>\")\n"
      "\"dependencies\": {\"react\": \"^18.2.0\", \"lodash\": \"4.17.21\"}\n"
      "background: url(icon@2x.png); npm install react@18.2.0\n"
      "git@github.com:hearth/hearth.git\n"
      "model: qwen2.5-coder-1.5b-instruct-q4_k_m.gguf\n"
      "tokens_per_second = 59.8  # llama-bench -p 512 -n 128\n"
      // Names that are mixed-case with digits (seen in llama.cpp's sources): model slugs, build
      // keys with a hash, CamelCase feature names.
      "model = \"meta-llama/Llama-4-Scout-17B-16E-Instruct-Q4_K_M\"\n"
      "hf_repo: ggml-org/Qwen3-Coder-30B-A3B-Instruct-Q8_0-GGUF\n"
      "key: Dawn-94c3c9cc0d5fb2e85aebb370fa8d37b71aa34655-ubuntu-latest-Release\n"
      "features = {\"Packed4x8IntegerDotProduct\", \"ShaderFloat16Int8Support\"};\n");
}

// ---- personal data -------------------------------------------------------------------------

TEST(ScannerPersonal, Email) {
  ExpectOne("Contact: jane.doe@example.com.", "email", "jane.doe@example.com");
  ExpectOne("<ops+alerts@mail.example.co.uk>", "email", "ops+alerts@mail.example.co.uk");
  ExpectNone("user@localhost @decorator a@b react@18.2.0 icon@2x.png git@github.com:org/repo.git");
}

TEST(ScannerPersonal, PhoneNumbers) {
  ExpectOne("call +1 415-555-0132 now", "phone_number", "+1 415-555-0132");
  ExpectOne("tel: +44 20 7946 0958", "phone_number", "+44 20 7946 0958");
  ExpectOne("\"+4930123456\"", "phone_number", "+4930123456");
  ExpectOne("Phone (415) 555-0132.", "phone_number", "(415) 555-0132");
  ExpectOne("fax 415.555.0132", "phone_number", "415.555.0132");
  ExpectOne("office 020 7946 0958", "phone_number", "020 7946 0958");
  ExpectOne("mobile 07700 900123", "phone_number", "07700 900123");
  ExpectOne("Tél. 01 23 45 67 89", "phone_number", "01 23 45 67 89");
  ExpectOne("1-800-555-0199", "phone_number", "1-800-555-0199");
  ExpectNone("2024-11-22 22/11/2024 2024.11.22 11-22-2024 20241122 2024-11-22T06:29:14+01:00 06:29:14\n"
             "1.2.3.4 10.0.0.1 192.168.100.200 255.255.255.0 x = y +12345678; a+123456789 1e+10\n"
             "version 2.415.555.0132 id 1234567890 order 123-456-7890-12 phone: 415-555-01320");
}

TEST(ScannerPersonal, Iban) {
  ExpectOne("IBAN: DE89 3704 0044 0532 0130 00", "iban", "DE89 3704 0044 0532 0130 00");
  ExpectOne("pay to GB82WEST12345698765432.", "iban", "GB82WEST12345698765432");
  ExpectNone("IBAN: DE89 3704 0044 0532 0130 01");  // mod 97 fails
  ExpectNone("CP1252 UTF8 AB12CDEF34567890 XX00 0000 0000");
}

TEST(ScannerPersonal, CardNumbers) {
  ExpectOne("card 4111 1111 1111 1111 exp 12/29", "card_number", "4111 1111 1111 1111");
  ExpectOne("5555-5555-5555-4444", "card_number", "5555-5555-5555-4444");
  ExpectOne("amex=378282246310005;", "card_number", "378282246310005");
  ExpectNone("4111 1111 1111 1112");       // Luhn fails
  ExpectNone("id 1234567890123456 9999999999999995 7000000000000007");  // no issuer
  ExpectNone("pi = 3.4111111111111111; v = 0x4111111111111111; s = \"41111111111111112\"");
}

TEST(ScannerPersonal, UsSsn) {
  ExpectOne("SSN: 536-22-1847", "us_ssn", "536-22-1847");
  ExpectNone("000-12-3456 666-12-3456 912-34-5678 536-00-1847 536-22-0000 078-05-1120 123-45-6789 2024-123-45-6789");
}

TEST(ScannerPersonal, NhsNumber) {
  ExpectOne("NHS number 943 476 5919", "uk_nhs_number", "943 476 5919");
  ExpectOne("401-123-4567", "uk_nhs_number", "401-123-4567");
  ExpectOne("nhs no: 9434765919", "uk_nhs_number", "9434765919");
  ExpectNone("401 123 4568 000 000 0000");  // check digit wrong; degenerate
  ExpectNone("created 9434765919");         // bare 10 digits without the label: could be a timestamp
}

TEST(ScannerPersonal, MedicalRecordNumber) {
  ExpectOne("Patient MRN: 00482913 admitted", "medical_record_number", "00482913");
  ExpectOne("mrn#7730021", "medical_record_number", "7730021");
  ExpectOne("Medical Record Number 5512093", "medical_record_number", "5512093");
  ExpectNone("MRN: 12 mrn_value = 123456 MRN1234567890123");
  ScannerConfig config;
  config.mrn_labels = {"Patient ID"};
  Scanner scanner(config);
  EXPECT_EQ(Found("Patient ID: 8841207", scanner), (Pairs{{"medical_record_number", "8841207"}}));
  ExpectNone("MRN: 00482913", scanner);
}

// ---- custom patterns, overlaps, names ------------------------------------------------------

TEST(ScannerCustom, PatternsFromConfig) {
  ScannerConfig config;
  config.custom = {{"employee_id", "EMP-[0-9]{6}", FindingKind::kPersonalData},
                   {"project_codename", "(?i)project[ _-]?(falcon|osprey)"}};
  Scanner scanner(config);
  auto findings = scanner.Scan("assign EMP-004211 to Project Falcon and EMP-12 to project_osprey");
  ASSERT_EQ(findings.size(), 3u);
  EXPECT_EQ(findings[0], (Finding{"employee_id", FindingKind::kPersonalData, 7, 10}));
  EXPECT_EQ(findings[1], (Finding{"project_codename", FindingKind::kCustom, 21, 14}));
  EXPECT_EQ(findings[2], (Finding{"project_codename", FindingKind::kCustom, 50, 14}));
  const auto& names = scanner.rule_names();
  EXPECT_EQ(names.end()[-2], "employee_id");
  EXPECT_EQ(names.back(), "project_codename");
  for (std::string_view rule : {"aws_access_key_id", "jwt", "email", "iban", "card_number", "uk_nhs_number"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), rule), names.end()) << rule;
  }
}

TEST(ScannerCustom, UnboundedPatternGetsItsWholeMatch) {
  ScannerConfig config;
  config.custom = {{"ticket", "TICKET-[A-Z]+-[0-9]+"}};
  Scanner scanner(config);
  EXPECT_EQ(Found("see TICKET-PAYMENTS-12345, then TICKET-X-1", scanner),
            (Pairs{{"ticket", "TICKET-PAYMENTS-12345"}, {"ticket", "TICKET-X-1"}}));
}

TEST(ScannerCustom, BadPatternThrowsNamingIt) {
  ScannerConfig config;
  config.custom = {{"good", "abc[0-9]+"}, {"broken_rule", "(unclosed[0-9"}};
  try {
    Scanner scanner(config);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("broken_rule"), std::string::npos) << message;
    EXPECT_NE(message.find("(unclosed[0-9"), std::string::npos) << message;
    EXPECT_NE(message.find("does not compile"), std::string::npos) << message;
  }
  config.custom = {{"empty", "a*"}};
  EXPECT_THROW(Scanner{config}, std::invalid_argument);  // matches the empty string
  config.custom = {{"", "abc"}};
  EXPECT_THROW(Scanner{config}, std::invalid_argument);
}

TEST(ScannerOverlap, LongestWinsThenMostSpecific) {
  // The same value is a GitHub token and a secret assignment: one finding, the specific rule.
  const std::string token = "gh" "p_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d";
  ExpectOne("GITHUB_TOKEN=\"" + token + "\"\n", "github_token", token);
  // A longer custom match swallows the SSN inside it.
  ScannerConfig config;
  config.custom = {{"case_ref", "CASE/[0-9]{3}-[0-9]{2}-[0-9]{4}/[A-Z]{2}"}};
  Scanner scanner(config);
  EXPECT_EQ(Found("ref CASE/536-22-1847/NY and 536-22-1847", scanner),
            (Pairs{{"case_ref", "CASE/536-22-1847/NY"}, {"us_ssn", "536-22-1847"}}));
  // "user:pw@host" inside a URL is userinfo, not an e-mail address.
  EXPECT_EQ(Found("smtp://mailer:pw1Xz9@smtp.example.com to jane.doe@example.com"),
            (Pairs{{"url_password", "pw1Xz9"}, {"email", "jane.doe@example.com"}}));
}

TEST(ScannerOverlap, FindingsAreSortedAndDisjoint) {
  std::string text =
      "jane.doe@example.com 4111 1111 1111 1111 AKIA" "IOSFODNN7EXAMPLE +44 20 7946 0958\n"
      "DB_PASSWORD=Tr0ub4dor&3\nGB82WEST12345698765432 536-22-1847";
  auto findings = Default().Scan(text);
  ASSERT_EQ(findings.size(), 7u);
  for (size_t i = 1; i < findings.size(); ++i) {
    EXPECT_LE(findings[i - 1].offset + findings[i - 1].length, findings[i].offset);
  }
}

TEST(ScannerThreads, ConcurrentScansAgree) {
  ScannerConfig config;
  config.custom = {{"employee_id", "EMP-[0-9]{6}"}};
  Scanner scanner(config);
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text += "line " + std::to_string(i) + ": contact jane.doe@example.com, card 4111 1111 1111 1111, EMP-00" +
            std::to_string(1000 + i) + ", key AKIA" "IOSFODNN7EXAMPLE\nint x = " + std::to_string(i * 7) + ";\n";
  }
  const std::vector<Finding> expected = scanner.Scan(text);
  ASSERT_EQ(expected.size(), 800u);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 25; ++round) {
        if (scanner.Scan(text) != expected) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(ScannerEdges, EmptyAndBinaryText) {
  EXPECT_TRUE(Default().Scan("").empty());
  std::string binary;
  std::mt19937 rng(1);
  for (int i = 0; i < 1 << 16; ++i) binary += static_cast<char>(rng() & 0xFF);
  for (const Finding& f : Default().Scan(binary)) EXPECT_LE(f.offset + f.length, binary.size());
  // Matches at the very start and end of the text.
  ExpectOne("jane@example.com", "email", "jane@example.com");
  ExpectOne("AKIA" "IOSFODNN7EXAMPLE", "aws_access_key_id", "AKIA" "IOSFODNN7EXAMPLE");
}

TEST(ScannerEdges, ValuesAtEveryAlignment) {
  // The prefilter reads 64-byte chunks of 16-byte blocks; plant values across every boundary.
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {"key = \"", "Xk9mP2vLq7Rz4Wb8Nc3Ty6Hd", "high_entropy_token"},  // exactly 24: the shortest run
      {"key = \"", "c5XlrWi0B26R08qzjI6GKFSufrdZSlB5", "high_entropy_token"},
      {"card ", "4111 1111 1111 1111", "card_number"},
      {"ssn ", "536-22-1847", "us_ssn"},
      {"mail ", "jane.doe@example.com", "email"},
      {"tel ", "+44 20 7946 0958", "phone_number"},
      {"iban ", "DE89 3704 0044 0532 0130 00", "iban"},
      {"id ", "AKIA" "IOSFODNN7EXAMPLE", "aws_access_key_id"},
  };
  for (const auto& [before, value, rule] : cases) {
    for (size_t pad = 0; pad < 140; ++pad) {
      std::string text = std::string(pad, ' ') + before + value + "\" ok\n" + std::string(pad % 7, ' ');
      auto findings = Default().Scan(text);
      ASSERT_EQ(findings.size(), 1u) << rule << " at pad " << pad;
      EXPECT_EQ(findings[0].rule, rule) << "pad " << pad;
      EXPECT_EQ(text.substr(findings[0].offset, findings[0].length), value) << "pad " << pad;
    }
  }
  // One character short of the shortest run: never a high-entropy token, wherever it lies.
  for (size_t pad = 0; pad < 140; ++pad) {
    ExpectNone(std::string(pad, ' ') + "key = \"Xk9mP2vLq7Rz4Wb8Nc3Ty6H\"\n");
  }
}

// ---- sensitive paths -----------------------------------------------------------------------

TEST(SensitivePaths, Globs) {
  ScannerConfig config;
  config.sensitive_paths = {"data/patients/**", "*.pem", ".env", "secrets/", "/etc/ssl/**", "config/*/prod?.yaml",
                            "**/credentials.json"};
  Scanner scanner(config);
  for (std::string_view path : {"data/patients/2024/jane.csv", "data/patients", "./data/patients/x",
                                "/home/u/proj/data/patients/a.csv", "certs/server.pem", "server.pem", "app/.env", ".env",
                                "src/secrets/key.txt", "/etc/ssl/private/key", "etc/ssl/certs", "config/eu/prod1.yaml",
                                "config\\eu\\prod2.yaml", "credentials.json", "a/b/credentials.json"}) {
    EXPECT_TRUE(scanner.IsSensitivePath(path)) << path;
  }
  for (std::string_view path : {"data/patientsx/a.csv", "data/other/patients.csv", "server.pem.txt", ".env.example",
                                "app/env", "mysecrets/key.txt", "x/etc/ssl/key", "config/eu/x/prod1.yaml",
                                "config/eu/prod12.yaml", "credentials.json.bak", ""}) {
    EXPECT_FALSE(scanner.IsSensitivePath(path)) << path;
  }
}

TEST(SensitivePaths, GlobMatchSemantics) {
  EXPECT_TRUE(GlobMatch("a/**/b", "a/b"));
  EXPECT_TRUE(GlobMatch("a/**/b", "a/x/y/b"));
  EXPECT_FALSE(GlobMatch("a/**/b", "a/xb"));
  EXPECT_TRUE(GlobMatch("**", "any/thing/at/all"));
  EXPECT_TRUE(GlobMatch("*.log", "app.log"));
  EXPECT_FALSE(GlobMatch("*.log", "dir/app.log"));  // '*' stays within a segment
  EXPECT_TRUE(GlobMatch("file?.txt", "file1.txt"));
  EXPECT_FALSE(GlobMatch("file?.txt", "file/.txt"));
  // Many stars on a long path stay fast (memoised).
  std::string path(3000, 'a');
  EXPECT_FALSE(GlobMatch("*a*a*a*a*a*a*a*a*a*b", path));
}

// ---- redaction and restoration -------------------------------------------------------------

TEST(Redaction, StablePlaceholdersAcrossTexts) {
  Redaction redaction;
  std::string first = "Mail jane.doe@example.com or bob@example.org about card 4111 1111 1111 1111.";
  std::string second = "Did jane.doe@example.com reply?";
  std::string r1 = redaction.Redact(first, Default().Scan(first));
  std::string r2 = redaction.Redact(second, Default().Scan(second));
  EXPECT_EQ(r1, "Mail [[REDACTED_EMAIL_1]] or [[REDACTED_EMAIL_2]] about card [[REDACTED_CARD_NUMBER_1]].");
  EXPECT_EQ(r2, "Did [[REDACTED_EMAIL_1]] reply?");
  EXPECT_EQ(redaction.count(), 4u);
  EXPECT_EQ(redaction.mapping(), (Pairs{{"[[REDACTED_EMAIL_1]]", "jane.doe@example.com"},
                                        {"[[REDACTED_EMAIL_2]]", "bob@example.org"},
                                        {"[[REDACTED_CARD_NUMBER_1]]", "4111 1111 1111 1111"}}));
}

TEST(Redaction, CustomNamesBecomeLabelsAndBadFindingsAreIgnored) {
  Redaction redaction;
  std::string text = "id EMP-004211 end";
  std::vector<Finding> findings = {{"employee id (HR)", FindingKind::kCustom, 3, 10},
                                   {"x", FindingKind::kCustom, 5, 4},      // overlaps the first
                                   {"y", FindingKind::kCustom, 15, 10}};  // out of range
  EXPECT_EQ(redaction.Redact(text, findings), "id [[REDACTED_EMPLOYEE_ID__HR__1]] end");
  EXPECT_EQ(redaction.count(), 1u);
}

std::string RestoreInChunks(const Pairs& mapping, const std::string& text, const std::vector<size_t>& cuts) {
  Restorer restorer(mapping);
  std::string out;
  size_t prev = 0;
  for (size_t cut : cuts) {
    out += restorer.Push(std::string_view(text).substr(prev, cut - prev));
    prev = cut;
  }
  out += restorer.Push(std::string_view(text).substr(prev));
  out += restorer.Flush();
  return out;
}

TEST(Restorer, EverySplitPoint) {
  Pairs mapping = {{"[[REDACTED_EMAIL_1]]", "jane.doe@example.com"}, {"[[REDACTED_CARD_NUMBER_1]]", "4111 1111 1111 1111"}};
  const std::string response =
      "Write to [[REDACTED_EMAIL_1]]; [[REDACTED_EMAIL_1]][[REDACTED_CARD_NUMBER_1]] [x] [[ [[REDACTED_ "
      "[[[REDACTED_EMAIL_1]]] [[REDACTED_EMAIL_9]] done [";
  const std::string expected =
      "Write to jane.doe@example.com; jane.doe@example.com4111 1111 1111 1111 [x] [[ [[REDACTED_ "
      "[jane.doe@example.com] [[REDACTED_EMAIL_9]] done [";
  EXPECT_EQ(RestoreInChunks(mapping, response, {}), expected);
  for (size_t i = 0; i <= response.size(); ++i) {
    ASSERT_EQ(RestoreInChunks(mapping, response, {i}), expected) << "split at " << i;
    for (size_t j = i; j <= response.size(); j += 3) {
      ASSERT_EQ(RestoreInChunks(mapping, response, {i, j}), expected) << "split at " << i << ", " << j;
    }
  }
  // One byte at a time, and random chunkings.
  std::vector<size_t> bytes;
  for (size_t i = 1; i < response.size(); ++i) bytes.push_back(i);
  EXPECT_EQ(RestoreInChunks(mapping, response, bytes), expected);
  std::mt19937 rng(42);
  for (int round = 0; round < 500; ++round) {
    std::vector<size_t> cuts;
    for (size_t i = 1; i < response.size(); ++i) {
      if (rng() % 4 == 0) cuts.push_back(i);
    }
    ASSERT_EQ(RestoreInChunks(mapping, response, cuts), expected) << "round " << round;
  }
}

TEST(Restorer, HoldsBackOnlyWhatCouldBeAPlaceholder) {
  Restorer restorer(Pairs{{"[[REDACTED_EMAIL_1]]", "jane@example.com"}});
  EXPECT_EQ(restorer.Push("plain text "), "plain text ");
  EXPECT_EQ(restorer.Push("array[0] "), "array[0] ");
  EXPECT_EQ(restorer.Push("to [[RED"), "to ");
  EXPECT_EQ(restorer.Push("ACTED_EMA"), "");
  EXPECT_EQ(restorer.Push("IL_1]"), "");
  EXPECT_EQ(restorer.Push("] ok"), "jane@example.com ok");
  EXPECT_EQ(restorer.Push("[[REDACTED_EMAIL_2]] "), "[[REDACTED_EMAIL_2]] ");  // unknown: unchanged
  EXPECT_EQ(restorer.Push("[[REDACTED_lower]]"), "[[REDACTED_lower]]");         // not placeholder-shaped
  EXPECT_EQ(restorer.Push("end [[REDACTED_EM"), "end ");
  EXPECT_EQ(restorer.Flush(), "[[REDACTED_EM");  // the stream ended inside it
  EXPECT_EQ(restorer.Flush(), "");
  EXPECT_EQ(restorer.Push("[[REDACTED_EMAIL_1]]"), "jane@example.com");  // usable after Flush
}

TEST(Restorer, RoundTripsARedactedRequest) {
  std::string text = "Keys: AKIA" "IOSFODNN7EXAMPLE, mail jane.doe@example.com, IBAN DE89 3704 0044 0532 0130 00.";
  Redaction redaction;
  std::string redacted = redaction.Redact(text, Default().Scan(text));
  EXPECT_EQ(redacted.find("AKIA"), std::string::npos);
  EXPECT_TRUE(Default().Scan(redacted).empty()) << redacted;
  EXPECT_EQ(RestoreInChunks(redaction.mapping(), redacted, {7, 30, 31}), text);
}

}  // namespace
}  // namespace hearth::router
