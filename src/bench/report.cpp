#include "bench/report.h"

#include <algorithm>
#include <cmath>

#include "bench/report_html.h"

namespace hearth::bench {

using json = nlohmann::json;

double DecodeRate(const Result& r) {
  const double gen_ms = r.total_ms - r.ttft_ms;
  if (!r.ok || r.output_tokens < 2 || gen_ms <= 0) return 0;
  return static_cast<double>(r.output_tokens - 1) * 1000.0 / gen_ms;
}

Analysis Analyze(const BenchConfig& cfg, const BenchResult& result, size_t resamples, uint64_t seed) {
  Analysis a;
  const size_t ne = cfg.endpoints.size(), nc = cfg.categories.size();
  a.fits.resize(ne);
  for (size_t e = 0; e < ne; ++e) {
    for (size_t c = 0; c < nc; ++c) {
      CellStats cell;
      cell.endpoint = e;
      cell.category = c;
      std::vector<double> ttft, total, tokens, rate;
      for (const Sample& s : result.samples) {
        if (s.endpoint != e || s.category != c) continue;
        ++cell.requests;
        if (!s.result.ok) {
          ++cell.failures[s.result.failure];
          continue;
        }
        ++cell.ok;
        ttft.push_back(s.result.ttft_ms);
        total.push_back(s.result.total_ms);
        tokens.push_back(static_cast<double>(s.result.output_tokens));
        if (double r = DecodeRate(s.result); r > 0) rate.push_back(r);
        a.fits[e].samples.tokens.push_back(static_cast<double>(s.result.output_tokens));
        a.fits[e].samples.total_ms.push_back(s.result.total_ms);
      }
      cell.ttft_ms = Summarize(ttft);
      cell.total_ms = Summarize(total);
      cell.output_tokens = Summarize(tokens);
      cell.tokens_per_s = Summarize(rate);
      a.cells.push_back(std::move(cell));
    }
    a.fits[e].fit = FitLine(a.fits[e].samples.tokens, a.fits[e].samples.total_ms);
  }
  for (size_t i = 0; i < ne; ++i) {
    for (size_t j = i + 1; j < ne; ++j) {
      PairCrossover p;
      p.a = i;
      p.b = j;
      p.estimate = BootstrapCrossover(a.fits[i].samples, a.fits[j].samples, resamples, seed + i * 131 + j);
      const LinearFit &fi = a.fits[i].fit, &fj = a.fits[j].fit;
      p.comparable = fi.ok && fj.ok;
      p.faster_short = Faster(fi, fj, 0) <= 0 ? i : j;
      p.faster_long = fi.slope <= fj.slope ? i : j;
      if (!p.estimate.point) p.faster_long = p.faster_short;
      a.pairs.push_back(p);
    }
  }
  a.cold_ttft_ms.resize(ne);
  for (size_t e = 0; e < ne; ++e) {
    std::vector<double> v;
    for (const ColdSample& c : result.cold) {
      if (c.endpoint == e && c.result.ok) v.push_back(c.result.ttft_ms);
    }
    a.cold_ttft_ms[e] = Summarize(v);
  }
  return a;
}

namespace {

std::string Fmt(double v, int prec = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

std::string Quad(const Summary& s, int prec = 0) {
  if (s.count == 0) return "-";
  return Fmt(s.min, prec) + "/" + Fmt(s.median, prec) + "/" + Fmt(s.p95, prec) + "/" + Fmt(s.max, prec);
}

std::string FailureText(const std::map<std::string, size_t>& f) {
  std::string out;
  for (const auto& [kind, count] : f) out += (out.empty() ? "" : ", ") + kind + " x" + std::to_string(count);
  return out.empty() ? "-" : out;
}

json SummaryJson(const Summary& s) {
  if (s.count == 0) return nullptr;
  return {{"count", s.count}, {"min", s.min}, {"median", s.median}, {"p95", s.p95}, {"max", s.max}, {"mean", s.mean}};
}

std::string CrossoverText(const BenchConfig& cfg, const PairCrossover& p) {
  const std::string& a = cfg.endpoints[p.a].name;
  const std::string& b = cfg.endpoints[p.b].name;
  const auto& e = p.estimate;
  if (!p.comparable) {
    return a + " vs " + b + ": not compared: an endpoint has no fit (too few successful requests, or no "
           "spread in output length)";
  }
  if (!e.point) {
    return a + " vs " + b + ": no crossover; " + cfg.endpoints[p.faster_short].name +
           " is faster at every output length (" + std::to_string(e.crossed) + "/" +
           std::to_string(e.resamples) + " resamples crossed)";
  }
  std::string s = a + " vs " + b + ": " + cfg.endpoints[p.faster_long].name + " overtakes " +
                  cfg.endpoints[p.faster_short].name + " above " + Fmt(*e.point, 1) + " output tokens";
  if (e.crossed > 0) {
    s += " (bootstrap median " + Fmt(e.median, 1) + ", 90% interval " + Fmt(e.lo, 1) + " to " + Fmt(e.hi, 1) +
         "; crossed in " + std::to_string(e.crossed) + "/" + std::to_string(e.resamples) + " resamples)";
  }
  return s;
}

}  // namespace

void PrintTable(std::FILE* out, const BenchConfig& cfg, const BenchResult& result, const Analysis& a) {
  std::fprintf(out, "%-12s %-13s %7s  %-25s %-25s %-17s %-19s %s\n", "endpoint", "category", "ok/n",
               "TTFT ms min/med/p95/max", "total ms min/med/p95/max", "tokens min/med/max",
               "tok/s min/med/max", "failures");
  for (const CellStats& c : a.cells) {
    const std::string okn = std::to_string(c.ok) + "/" + std::to_string(c.requests);
    std::string tokens = c.output_tokens.count ? Fmt(c.output_tokens.min) + "/" + Fmt(c.output_tokens.median) + "/" + Fmt(c.output_tokens.max) : "-";
    std::string rate = c.tokens_per_s.count ? Fmt(c.tokens_per_s.min) + "/" + Fmt(c.tokens_per_s.median) + "/" + Fmt(c.tokens_per_s.max) : "-";
    std::fprintf(out, "%-12s %-13s %7s  %-25s %-25s %-17s %-19s %s\n", cfg.endpoints[c.endpoint].name.c_str(),
                 cfg.categories[c.category].name.c_str(), okn.c_str(), Quad(c.ttft_ms).c_str(),
                 Quad(c.total_ms).c_str(), tokens.c_str(), rate.c_str(), FailureText(c.failures).c_str());
  }
  std::fprintf(out, "\nfit total = TTFT + n / rate (least squares over all categories):\n");
  for (size_t e = 0; e < a.fits.size(); ++e) {
    const LinearFit& f = a.fits[e].fit;
    if (!f.ok) {
      std::fprintf(out, "  %-12s not enough spread in output length to fit (%zu points)\n",
                   cfg.endpoints[e].name.c_str(), f.n);
      continue;
    }
    std::fprintf(out, "  %-12s TTFT %.1f ms, %.3f ms/token (%.1f tokens/s), R^2 %.3f, %zu points\n",
                 cfg.endpoints[e].name.c_str(), f.intercept, f.slope, f.slope > 0 ? 1000.0 / f.slope : 0.0,
                 f.r2, f.n);
  }
  if (!a.pairs.empty()) std::fprintf(out, "\ncrossover:\n");
  for (const PairCrossover& p : a.pairs) std::fprintf(out, "  %s\n", CrossoverText(cfg, p).c_str());
  bool any_cold = false;
  for (size_t e = 0; e < a.cold_ttft_ms.size(); ++e) {
    if (a.cold_ttft_ms[e].count == 0) continue;
    if (!any_cold) std::fprintf(out, "\ncold start (unload, then load to first token), ms min/med/max:\n");
    any_cold = true;
    const Summary& s = a.cold_ttft_ms[e];
    std::fprintf(out, "  %-12s %.0f/%.0f/%.0f (%zu runs)\n", cfg.endpoints[e].name.c_str(), s.min, s.median, s.max, s.count);
  }
  for (const ColdSample& c : result.cold) {
    if (!c.result.ok) {
      std::fprintf(out, "  %-12s cold start failed: %s %s\n", cfg.endpoints[c.endpoint].name.c_str(),
                   c.result.failure.c_str(), c.result.detail.substr(0, 120).c_str());
    }
  }
  std::fprintf(out, "\n%zu requests in %.1f s%s\n", result.samples.size(), result.elapsed_s,
               result.aborted ? (" - ABORTED: " + result.abort_reason).c_str() : "");
}

json ReportJson(const BenchConfig& cfg, const BenchResult& result, const Analysis& a) {
  json j;
  j["hearth_bench"] = 1;
  j["started_at"] = result.started_at;
  j["elapsed_s"] = result.elapsed_s;
  j["aborted"] = result.aborted;
  j["abort_reason"] = result.abort_reason;
  json eps = json::array();
  for (const Endpoint& e : cfg.endpoints) {
    eps.push_back({{"name", e.name}, {"url", e.url}, {"api", ApiName(e.api)}, {"model", e.model}});
  }
  json cats = json::array();
  for (const Category& c : cfg.categories) {
    cats.push_back({{"name", c.name}, {"min_tokens", c.min_tokens}, {"max_tokens", c.max_tokens},
                    {"prompts", c.prompts.size()}});
  }
  j["config"] = {{"runs", cfg.runs}, {"warmup", cfg.warmup}, {"concurrency", cfg.concurrency},
                 {"failure_threshold", cfg.failure_threshold},
                 {"connect_timeout_s", cfg.timeouts.connect_s}, {"read_timeout_s", cfg.timeouts.read_s},
                 {"endpoints", eps}, {"categories", cats}};
  json results = json::array();
  for (const CellStats& c : a.cells) {
    results.push_back({{"endpoint", cfg.endpoints[c.endpoint].name},
                       {"category", cfg.categories[c.category].name},
                       {"requests", c.requests},
                       {"ok", c.ok},
                       {"failures", c.failures},
                       {"ttft_ms", SummaryJson(c.ttft_ms)},
                       {"total_ms", SummaryJson(c.total_ms)},
                       {"output_tokens", SummaryJson(c.output_tokens)},
                       {"tokens_per_s", SummaryJson(c.tokens_per_s)}});
  }
  j["results"] = results;
  json fits = json::array();
  for (size_t e = 0; e < a.fits.size(); ++e) {
    const LinearFit& f = a.fits[e].fit;
    fits.push_back({{"endpoint", cfg.endpoints[e].name}, {"ok", f.ok}, {"points", f.n},
                    {"ttft_ms", f.ok ? json(f.intercept) : json(nullptr)},
                    {"ms_per_token", f.ok ? json(f.slope) : json(nullptr)},
                    {"tokens_per_s", f.ok && f.slope > 0 ? json(1000.0 / f.slope) : json(nullptr)},
                    {"r2", f.ok ? json(f.r2) : json(nullptr)}});
  }
  j["fits"] = fits;
  json pairs = json::array();
  for (const PairCrossover& p : a.pairs) {
    const auto& e = p.estimate;
    pairs.push_back({{"a", cfg.endpoints[p.a].name}, {"b", cfg.endpoints[p.b].name}, {"comparable", p.comparable},
                     {"tokens", e.point ? json(*e.point) : json(nullptr)},
                     {"bootstrap", {{"resamples", e.resamples}, {"crossed", e.crossed},
                                    {"median", e.crossed ? json(e.median) : json(nullptr)},
                                    {"lo", e.crossed ? json(e.lo) : json(nullptr)},
                                    {"hi", e.crossed ? json(e.hi) : json(nullptr)}}},
                     {"faster_short", cfg.endpoints[p.faster_short].name},
                     {"faster_long", cfg.endpoints[p.faster_long].name},
                     {"text", CrossoverText(cfg, p)}});
  }
  j["crossovers"] = pairs;
  json cold = json::array();
  for (size_t e = 0; e < a.cold_ttft_ms.size(); ++e) {
    size_t tried = 0;
    for (const ColdSample& c : result.cold) tried += c.endpoint == e;
    if (tried == 0) continue;
    cold.push_back({{"endpoint", cfg.endpoints[e].name}, {"runs", tried}, {"ttft_ms", SummaryJson(a.cold_ttft_ms[e])}});
  }
  j["cold_start"] = cold;
  json samples = json::array();
  for (const Sample& s : result.samples) {
    json o = {{"endpoint", cfg.endpoints[s.endpoint].name}, {"category", cfg.categories[s.category].name},
              {"run", s.run}, {"prompt", s.prompt_id}, {"ok", s.result.ok}};
    if (s.result.ok) {
      o["ttft_ms"] = s.result.ttft_ms;
      o["total_ms"] = s.result.total_ms;
      o["output_tokens"] = s.result.output_tokens;
      o["tokens_per_s"] = DecodeRate(s.result);
    } else {
      o["failure"] = s.result.failure;
      o["detail"] = s.result.detail;
      o["total_ms"] = s.result.total_ms;
    }
    samples.push_back(o);
  }
  j["samples"] = samples;
  return j;
}

std::string ReportHtml(const json& report) {
  // JSON inside <script>: no "</script>" or "<!--" can appear once '<' is escaped (only inside
  // strings can it occur, where \u003c means the same).
  std::string data = report.dump(-1, ' ', false, json::error_handler_t::replace);
  std::string safe;
  safe.reserve(data.size());
  for (char ch : data) {
    if (ch == '<') safe += "\\u003c";
    else safe += ch;
  }
  std::string html = kReportHtmlHead;
  html += "<script id=\"bench-data\" type=\"application/json\">";
  html += safe;
  html += "</script>\n<script>\n";
  html += kReportJs;
  html += "\n</script>\n</body>\n</html>\n";
  return html;
}

}  // namespace hearth::bench
