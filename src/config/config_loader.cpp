#include "config/config_loader.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <memory>
#include <system_error>
#include <utility>

namespace sluice::config {
namespace {

constexpr std::size_t max_limits = 64;  // the limiter reports rule outcomes in 64-bit masks
constexpr std::size_t max_name_length = 64;
constexpr std::uint64_t max_header_bytes_cap = std::uint64_t{1} << 30;  // Beast's header limit is 32-bit
constexpr std::size_t max_file_bytes = 16 << 20;
constexpr std::uint64_t no_max = std::numeric_limits<std::uint64_t>::max();
constexpr std::size_t default_max_idle = upstream_settings{}.max_idle;

constexpr std::string_view rate_expected = "N/s, N/m or N/h, N > 0, e.g. 100/s or 0.5/s";
constexpr std::string_view duration_units = "a whole number with unit ms, s, m or h, e.g. 250ms, 10s, 2m, 1h";
constexpr std::string_view size_expected =
    "a size: bytes, or a whole number with unit KiB, MiB or GiB, e.g. 512, 16KiB, 10MiB";

/// A YAML node with the mark and key path that errors about it report.
struct field {
  YAML::Node node;
  YAML::Mark mark;
  std::string path;
};

/// One entry of a checked mapping: the key as text and where the key was written.
struct item {
  std::string key;
  YAML::Mark key_mark;
  field value;
};

/// The entries of a mapping, each key once, in file order.
struct mapping {
  field self;
  std::vector<item> items;

  [[nodiscard]] const field* find(std::string_view key) const {
    for (const auto& i : items) {
      if (i.key == key) return &i.value;
    }
    return nullptr;
  }
};

bool is_tchar(char c) {
  // RFC 9110 section 5.6.2: token = 1*tchar.
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

bool is_limit_name(std::string_view s) {
  if (s.empty() || s.size() > max_name_length) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

std::string quote(std::string_view s) {
  constexpr std::size_t max_shown = 100;
  std::string out = "\"";
  for (std::size_t i = 0; i < s.size() && i < max_shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_shown) out += "...";
  out += '"';
  return out;
}

/// Flow-style text of a node, cut short: aliases can make a small file expand to a huge or cyclic tree.
void render_into(std::string& out, const YAML::Node& node, int depth) {
  constexpr std::size_t budget = 60;
  constexpr int max_depth = 4;
  if (node.IsScalar()) {
    out += node.Scalar();
  } else if (node.IsSequence() || node.IsMap()) {
    out += node.IsMap() ? '{' : '[';
    bool first = true;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!first) out += ", ";
      first = false;
      if (depth >= max_depth || out.size() > budget) {
        out += "...";
        break;
      }
      if (node.IsMap()) {
        render_into(out, it->first, depth + 1);
        out += ": ";
        render_into(out, it->second, depth + 1);
      } else {
        render_into(out, *it, depth + 1);
      }
    }
    out += node.IsMap() ? '}' : ']';
  } else {
    out += '~';
  }
}

/// The node as an error message shows it: a scalar quoted, a collection in flow style.
std::string render(const YAML::Node& node) {
  if (node.IsScalar()) return quote(node.Scalar());
  std::string text;
  render_into(text, node, 0);
  return text;
}

std::string kind_of(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Scalar: return "a single value";
    default: return "empty";
  }
}

/// True for a scalar written in quotes (or tagged !!str): YAML says it is a string, not a number or bool.
bool is_quoted(const YAML::Node& node) { return node.Tag() == "!" || node.Tag() == "tag:yaml.org,2002:str"; }

std::string join(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  std::string out(parent);
  out += '.';
  out += key;
  return out;
}

std::string join_list(const std::vector<std::string_view>& names) {
  std::string out;
  for (const auto name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string range_text(std::uint64_t min, std::uint64_t max) {
  if (max == no_max) return "an integer >= " + std::to_string(min);
  return "an integer from " + std::to_string(min) + " to " + std::to_string(max);
}

std::string size_text(std::uint64_t bytes) {
  if (bytes >= (1u << 30) && bytes % (1u << 30) == 0) return std::to_string(bytes >> 30) + "GiB";
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return std::to_string(bytes >> 20) + "MiB";
  if (bytes >= (1u << 10) && bytes % (1u << 10) == 0) return std::to_string(bytes >> 10) + "KiB";
  return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
}

template <class E>
using choices = std::vector<std::pair<std::string_view, E>>;

/// Walks one YAML document into a config, collecting every error instead of stopping at the first.
class loader {
 public:
  explicit loader(std::string file) : file_(std::move(file)) {}

  load_result run(std::string_view text) {
    text_ = text;
    config cfg;
    cfg.source_path = file_;
    try {
      // yaml-cpp reads only the first document with Load; LoadAll lets a stray "---" be reported.
      const auto docs = YAML::LoadAll(std::string(text));
      for (std::size_t i = 1; i < docs.size(); ++i) {
        if (!docs[i].IsNull()) {
          error(docs[i].Mark(), "", "a second YAML document starts here (expected one document per file)");
        }
      }
      if (!docs.empty() && !docs[0].IsNull()) read_root(docs[0], cfg);
    } catch (const YAML::Exception& e) {
      error(e.mark, "", "YAML syntax error: " + e.msg + bracket_hint(e.mark));
    } catch (const std::exception& e) {
      error(YAML::Mark::null_mark(), "", std::string("cannot load the file: ") + e.what());
    }
    std::stable_sort(errors_.begin(), errors_.end(), [](const config_error& a, const config_error& b) {
      return std::pair(a.line, a.column) < std::pair(b.line, b.column);
    });
    load_result result;
    if (errors_.empty()) result.value = std::move(cfg);
    result.errors = std::move(errors_);
    return result;
  }

 private:
  void error(const YAML::Mark& mark, std::string path, std::string message) {
    config_error e;
    e.file = file_;
    if (!mark.is_null()) {
      e.line = mark.line + 1;
      e.column = mark.column + 1;
    }
    e.key_path = std::move(path);
    e.message = std::move(message);
    errors_.push_back(std::move(e));
  }
  void error(const field& f, std::string message) { error(f.mark, f.path, std::move(message)); }

  void wrong_type(const field& f, std::string_view expected) {
    if (f.node.IsNull()) {
      error(f, "has no value (expected " + std::string(expected) + ")");
    } else {
      error(f, render(f.node) + " is " + kind_of(f.node) + " (expected " + std::string(expected) + ")");
    }
  }

  void missing(const mapping& m, std::string_view key, std::string_view why) {
    error(m.self.mark, join(m.self.path, key), "is missing (" + std::string(why) + ")");
  }

  static field child(const YAML::Node& key, const YAML::Node& value, std::string path) {
    // A missing value ("key:") is marked at the next token, often a later line: point at the key instead.
    const YAML::Mark mark = value.IsNull() || value.Mark().is_null() ? key.Mark() : value.Mark();
    return field{value, mark, std::move(path)};
  }

  /// A mapping's entries. allowed empty = any key (overrides); null counts as an empty mapping so that a
  /// block whose keys are all commented out means all defaults.
  std::optional<mapping> open_map(const field& f, const std::vector<std::string_view>& allowed,
                                  std::string_view expected) {
    mapping m{f, {}};
    if (f.node.IsNull()) return m;
    if (!f.node.IsMap()) {
      wrong_type(f, expected);
      return std::nullopt;
    }
    for (auto it = f.node.begin(); it != f.node.end(); ++it) {
      // A copy, not a reference: yaml-cpp's operator-> returns a proxy that dies with the expression.
      const YAML::Node key = it->first;
      if (!key.IsScalar()) {
        error(key.Mark(), f.path, render(key) + " is " + kind_of(key) + " used as a key (expected a plain key name)");
        continue;
      }
      const std::string& name = key.Scalar();
      const std::string path = allowed.empty() ? f.path + "[" + quote(name) + "]" : join(f.path, name);
      if (const auto first = std::find_if(m.items.begin(), m.items.end(), [&](const item& i) { return i.key == name; });
          first != m.items.end()) {
        error(key.Mark(), path,
              "duplicate key " + quote(name) + " (first at line " + std::to_string(first->key_mark.line + 1) +
                  "; each key may appear once in a mapping)");
        continue;
      }
      if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        unknown_key(key.Mark(), path, name, allowed);
        continue;
      }
      m.items.push_back(item{name, key.Mark(), child(key, it->second, path)});
    }
    return m;
  }

  void unknown_key(const YAML::Mark& mark, std::string path, std::string_view name,
                   const std::vector<std::string_view>& allowed) {
    std::string message = "unknown key " + quote(name) + " (";
    std::string_view best;
    std::size_t best_distance = 3;  // suggest only near misses
    for (const auto candidate : allowed) {
      const auto d = edit_distance(name, candidate);
      if (d < best_distance) {
        best_distance = d;
        best = candidate;
      }
    }
    if (!best.empty()) message += "did you mean " + quote(best) + "? ";
    message += "allowed here: " + join_list(allowed) + ")";
    error(mark, std::move(path), std::move(message));
  }

  /// An unquoted [::]:8080 is a YAML list followed by garbage; say so, as the parser's words do not.
  std::string bracket_hint(const YAML::Mark& mark) const {
    if (mark.is_null()) return "";
    std::size_t start = 0;
    for (int line = 0; line < mark.line && start != std::string_view::npos; ++line) {
      start = text_.find('\n', start);
      if (start != std::string_view::npos) ++start;
    }
    if (start == std::string_view::npos || start >= text_.size()) return "";
    const auto line = text_.substr(start, text_.find('\n', start) - start);
    const auto open = line.find('[');
    if (open == std::string_view::npos || line.find("]:", open) == std::string_view::npos) return "";
    return " (an IPv6 endpoint must be quoted, e.g. \"[::]:8080\", or YAML reads [...] as a list)";
  }

  /// yaml-cpp marks an empty list item ("-" alone) at the next token, often a later line; when a block
  /// list's dash precedes that mark with only blanks between, point at the dash instead.
  YAML::Mark dash_before(YAML::Mark mark) const {
    if (mark.pos < 0 || static_cast<std::size_t>(mark.pos) > text_.size()) return mark;
    std::size_t i = static_cast<std::size_t>(mark.pos);
    while (i > 0 && (text_[i - 1] == ' ' || text_[i - 1] == '\t' || text_[i - 1] == '\n' || text_[i - 1] == '\r')) --i;
    if (i == 0 || text_[i - 1] != '-') return mark;
    const std::size_t dash = i - 1;
    const std::size_t line_start = text_.rfind('\n', dash) == std::string_view::npos ? 0 : text_.rfind('\n', dash) + 1;
    mark.pos = static_cast<int>(dash);
    mark.line = static_cast<int>(std::count(text_.begin(), text_.begin() + static_cast<std::ptrdiff_t>(dash), '\n'));
    mark.column = static_cast<int>(dash - line_start);
    return mark;
  }

  /// The items of a list with their paths; null counts as an empty list.
  std::optional<std::vector<field>> open_list(const field& f, std::string_view expected) {
    std::vector<field> out;
    if (f.node.IsNull()) return out;
    if (!f.node.IsSequence()) {
      wrong_type(f, expected);
      return std::nullopt;
    }
    std::size_t index = 0;
    for (const auto& element : f.node) {
      YAML::Mark mark = element.Mark().is_null() ? f.mark : element.Mark();
      if (element.IsNull()) mark = dash_before(mark);
      out.push_back(field{element, mark, f.path + "[" + std::to_string(index++) + "]"});
    }
    return out;
  }

  std::optional<std::string> read_string(const field& f, std::string_view expected) {
    if (!f.node.IsScalar()) {
      wrong_type(f, expected);
      return std::nullopt;
    }
    return f.node.Scalar();
  }

  std::optional<std::uint64_t> read_integer(const field& f, std::uint64_t min, std::uint64_t max) {
    const std::string expected = range_text(min, max);
    const auto text = read_string(f, expected);
    if (!text) return std::nullopt;
    if (is_quoted(f.node)) {
      error(f, quote(*text) + " is a quoted string (expected " + expected + ", written without quotes)");
      return std::nullopt;
    }
    const std::string_view digits = !text->empty() && text->front() == '-' ? std::string_view(*text).substr(1)
                                                                            : std::string_view(*text);
    const bool numeric = !digits.empty() && std::all_of(digits.begin(), digits.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (!numeric) {
      error(f, quote(*text) + " is not an integer (expected " + expected + ")");
      return std::nullopt;
    }
    // Negative, or too many digits for 64 bits: out of range either way.
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (digits.size() != text->size() || ec != std::errc{} || value < min || value > max) {
      error(f, quote(*text) + " is out of range (expected " + expected + ")");
      return std::nullopt;
    }
    return value;
  }

  std::optional<bool> read_bool(const field& f) {
    const auto text = read_string(f, "true or false");
    if (!text) return std::nullopt;
    if (is_quoted(f.node)) {
      error(f, quote(*text) + " is a quoted string (expected true or false, written without quotes)");
      return std::nullopt;
    }
    if (*text == "true") return true;
    if (*text == "false") return false;
    error(f, quote(*text) + " is not a boolean (expected true or false)");
    return std::nullopt;
  }

  std::optional<duration> read_duration(const field& f, bool positive) {
    const std::string expected =
        (positive ? "a duration > 0: " : "a duration >= 0: ") + std::string(duration_units) + (positive ? "" : ", or 0");
    const auto text = read_string(f, expected);
    if (!text) return std::nullopt;
    const auto value = parse_duration(*text);
    if (!value) {
      const bool negative = !text->empty() && text->front() == '-';
      const bool no_unit = !text->empty() && std::all_of(text->begin(), text->end(), [](char c) {
        return c >= '0' && c <= '9';
      });
      const std::string_view what = negative ? " is negative" : no_unit ? " has no unit" : " is not a duration";
      error(f, quote(*text) + std::string(what) + " (expected " + expected + ")");
      return std::nullopt;
    }
    if (positive && *value == duration::zero()) {
      error(f, quote(*text) + " is not greater than 0 (expected " + expected + ")");
      return std::nullopt;
    }
    return value;
  }

  std::optional<std::uint64_t> read_size(const field& f, std::uint64_t min, std::uint64_t max) {
    const auto text = read_string(f, size_expected);
    if (!text) return std::nullopt;
    const auto value = parse_size(*text);
    if (!value) {
      error(f, quote(*text) + " is not a size (expected " + std::string(size_expected) + ")");
      return std::nullopt;
    }
    if (*value < min || *value > max) {
      const std::string range =
          max == no_max ? "at least " + size_text(min) : "from " + size_text(min) + " to " + size_text(max);
      error(f, quote(*text) + " is out of range (expected a size " + range + ")");
      return std::nullopt;
    }
    return value;
  }

  std::optional<rate> read_rate(const field& f) {
    const auto text = read_string(f, rate_expected);
    if (!text) return std::nullopt;
    auto value = parse_rate(*text);
    if (!value) error(f, quote(*text) + " is not a rate (expected " + std::string(rate_expected) + ")");
    return value;
  }

  std::optional<endpoint> read_endpoint(const field& f, std::uint16_t min_port, std::string_view example) {
    const std::string expected = "host:port or [IPv6]:port with port " + std::to_string(min_port) +
                                 "..65535, e.g. " + std::string(example);
    const auto text = read_string(f, expected);
    if (!text) return std::nullopt;
    auto value = parse_endpoint(*text);
    if (!value) {
      error(f, quote(*text) + " is not an endpoint (expected " + expected + ")");
      return std::nullopt;
    }
    if (value->port < min_port) {
      error(f, quote(*text) + " has port " + std::to_string(value->port) + " (expected " + expected + ")");
      return std::nullopt;
    }
    return value;
  }

  template <class E>
  std::optional<E> read_choice(const field& f, std::string_view what, const choices<E>& options) {
    std::vector<std::string_view> names;
    for (const auto& [name, value] : options) names.push_back(name);
    const std::string expected = "one of " + join_list(names);
    const auto text = read_string(f, expected);
    if (!text) return std::nullopt;
    for (const auto& [name, value] : options) {
      if (*text == name) return value;
    }
    error(f, quote(*text) + " is not " + std::string(what) + " (expected " + expected + ")");
    return std::nullopt;
  }

  template <class T, class U>
  static void assign(T& target, const std::optional<U>& value) {
    if (value) target = static_cast<T>(*value);
  }

  void read_root(const YAML::Node& root, config& cfg) {
    static const std::vector<std::string_view> keys = {"listen", "threads", "server", "upstream", "limits",
                                                       "max_tracked_keys", "rate_limit_headers", "drain", "admin",
                                                       "log"};
    const auto m = open_map(field{root, root.Mark(), ""}, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* f = m->find("listen")) assign(cfg.listen, read_endpoint(*f, 0, "0.0.0.0:8080 or [::]:8080"));
    if (const auto* f = m->find("threads")) assign(cfg.threads, read_integer(*f, 0, 256));
    if (const auto* f = m->find("server")) read_server(*f, cfg.server);
    if (const auto* f = m->find("upstream")) read_upstream(*f, cfg.upstream);
    if (const auto* f = m->find("limits")) read_limits(*f, cfg.limits);
    if (const auto* f = m->find("max_tracked_keys")) assign(cfg.max_tracked_keys, read_integer(*f, 1, no_max));
    if (const auto* f = m->find("rate_limit_headers")) {
      assign(cfg.rate_limit_headers,
             read_choice<header_mode>(*f, "a rate limit header mode",
                                      {{"latest", header_mode::latest}, {"legacy", header_mode::legacy},
                                       {"both", header_mode::both}, {"none", header_mode::none}}));
    }
    if (const auto* f = m->find("drain")) read_drain(*f, cfg.drain);
    if (const auto* f = m->find("admin")) read_admin(*f, cfg.admin);
    if (const auto* f = m->find("log")) read_log(*f, cfg.log);
  }

  void read_server(const field& f, server_settings& s) {
    static const std::vector<std::string_view> keys = {"max_connections", "header_timeout",  "idle_timeout",
                                                       "max_header_bytes", "max_body_bytes", "trusted_proxies"};
    const auto m = open_map(f, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* v = m->find("max_connections")) assign(s.max_connections, read_integer(*v, 1, no_max));
    if (const auto* v = m->find("header_timeout")) assign(s.header_timeout, read_duration(*v, true));
    if (const auto* v = m->find("idle_timeout")) assign(s.idle_timeout, read_duration(*v, true));
    if (const auto* v = m->find("max_header_bytes")) assign(s.max_header_bytes, read_size(*v, 1, max_header_bytes_cap));
    if (const auto* v = m->find("max_body_bytes")) assign(s.max_body_bytes, read_size(*v, 1, no_max));
    if (const auto* v = m->find("trusted_proxies")) {
      constexpr std::string_view expected = "an IP address or CIDR block, e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.1";
      const auto items = open_list(*v, "a list of IP addresses or CIDR blocks, e.g. [10.0.0.0/8, 192.0.2.1]");
      if (!items) return;
      for (const auto& item : *items) {
        const auto text = read_string(item, expected);
        if (!text) continue;
        if (const auto block = common::cidr::parse(*text)) {
          s.trusted_proxies.push_back(*block);
        } else {
          error(item, quote(*text) + " is not an IP address or CIDR block (expected " + std::string(expected) + ")");
        }
      }
    }
  }

  void read_upstream(const field& f, upstream_settings& u) {
    static const std::vector<std::string_view> keys = {"servers",         "max_connections",  "max_idle",
                                                       "idle_timeout",    "connect_timeout",  "response_timeout",
                                                       "queue_timeout",   "max_queue"};
    const auto m = open_map(f, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* v = m->find("servers")) {
      constexpr std::string_view expected = "a list of host:port, at least one, e.g. [\"127.0.0.1:9000\"]";
      if (const auto items = open_list(*v, expected)) {
        if (items->empty()) wrong_type_empty(*v, expected);
        u.servers.clear();
        for (const auto& item : *items) {
          if (auto e = read_endpoint(item, 1, "127.0.0.1:9000 or [::1]:9000")) u.servers.push_back(std::move(*e));
        }
      }
    }
    bool max_connections_ok = true;
    if (const auto* v = m->find("max_connections")) {
      const auto value = read_integer(*v, 1, no_max);
      max_connections_ok = value.has_value();
      assign(u.max_connections, value);
    }
    std::optional<std::uint64_t> max_idle;
    if (const auto* v = m->find("max_idle")) max_idle = read_integer(*v, 0, no_max);
    if (const auto* v = m->find("idle_timeout")) assign(u.idle_timeout, read_duration(*v, true));
    if (const auto* v = m->find("connect_timeout")) assign(u.connect_timeout, read_duration(*v, true));
    if (const auto* v = m->find("response_timeout")) assign(u.response_timeout, read_duration(*v, true));
    if (const auto* v = m->find("queue_timeout")) assign(u.queue_timeout, read_duration(*v, true));
    if (const auto* v = m->find("max_queue")) assign(u.max_queue, read_integer(*v, 0, no_max));
    if (max_idle) {
      if (max_connections_ok && *max_idle > u.max_connections) {
        const auto* v = m->find("max_idle");
        error(*v, quote(v->node.Scalar()) + " is more than max_connections (expected an integer from 0 to " +
                      std::to_string(u.max_connections) + "; 0 = no idle connections kept)");
      }
      u.max_idle = static_cast<std::size_t>(*max_idle);
    } else {
      // An omitted max_idle follows a small max_connections down rather than making it an error.
      u.max_idle = std::min(default_max_idle, u.max_connections);
    }
  }

  void wrong_type_empty(const field& f, std::string_view expected) {
    error(f, render(f.node) + " is empty (expected " + std::string(expected) + ")");
  }

  void read_limits(const field& f, std::vector<limit>& limits) {
    const auto items = open_list(f, "a list of limits, each a mapping with name, key, rate and burst");
    if (!items) return;
    if (items->size() > max_limits) {
      error(f, "has " + std::to_string(items->size()) + " entries (expected at most " + std::to_string(max_limits) +
                   " limits)");
    }
    std::vector<std::pair<std::string, std::string>> names;  // name -> path of the limit that has it
    for (const auto& item : *items) limits.push_back(read_limit(item, names));
  }

  limit read_limit(const field& f, std::vector<std::pair<std::string, std::string>>& names) {
    static const std::vector<std::string_view> keys = {"name", "key",  "rate",    "burst",
                                                       "ipv6_prefix", "when", "dry_run", "overrides"};
    limit l;
    if (f.node.IsNull()) {
      wrong_type(f, "a mapping with name, key, rate and burst");
      return l;
    }
    const auto m = open_map(f, keys, "a mapping with name, key, rate and burst");
    if (!m) return l;
    for (const auto required : {"name", "key", "rate", "burst"}) {
      if (!m->find(required)) missing(*m, required, "every limit needs name, key, rate and burst");
    }
    if (const auto* v = m->find("name")) {
      if (const auto name = read_string(*v, "a name of a-z, 0-9, _ and -")) {
        const auto same = std::find_if(names.begin(), names.end(), [&](const auto& n) { return n.first == *name; });
        if (!is_limit_name(*name)) {
          error(*v, quote(*name) + " is not a valid name (expected 1 to 64 characters from a-z, 0-9, _ and -)");
        } else if (same != names.end()) {
          error(*v, quote(*name) + " is already the name of " + same->second + " (expected a unique name)");
        } else {
          names.emplace_back(*name, f.path);
        }
        l.name = *name;
      }
    }
    std::optional<key_kind> kind;
    if (const auto* v = m->find("key")) kind = read_key(*v, l);
    assign(l.key, kind);
    if (const auto* v = m->find("rate")) assign(l.refill, read_rate(*v));
    if (const auto* v = m->find("burst")) assign(l.burst, read_integer(*v, 1, no_max));
    if (const auto* v = m->find("ipv6_prefix")) {
      const auto prefix = read_integer(*v, 1, 128);
      if (prefix && kind && *kind != key_kind::ip) {
        error(*v, quote(v->node.Scalar()) + " is set but this limit's key is not ip (expected ipv6_prefix only with key: ip)");
      }
      assign(l.ipv6_prefix, prefix);
    }
    if (const auto* v = m->find("when")) l.when = read_when(*v);
    if (const auto* v = m->find("dry_run")) assign(l.dry_run, read_bool(*v));
    if (const auto* v = m->find("overrides")) read_overrides(*v, kind, l.overrides);
    return l;
  }

  std::optional<key_kind> read_key(const field& f, limit& l) {
    constexpr std::string_view expected = "ip, global or header:NAME, e.g. header:X-API-Key";
    const auto text = read_string(f, expected);
    if (!text) return std::nullopt;
    if (*text == "ip") return key_kind::ip;
    if (*text == "global") return key_kind::global;
    constexpr std::string_view prefix = "header:";
    if (text->starts_with(prefix)) {
      const auto name = std::string_view(*text).substr(prefix.size());
      if (!is_token(name)) {
        error(f, quote(*text) + " does not name a valid header (expected header:NAME with NAME an HTTP token, "
                                "e.g. header:X-API-Key)");
        return std::nullopt;
      }
      l.header_name = std::string(name);
      return key_kind::header;
    }
    error(f, quote(*text) + " is not a limit key (expected " + std::string(expected) + ")");
    return std::nullopt;
  }

  std::optional<limit_filter> read_when(const field& f) {
    static const std::vector<std::string_view> keys = {"path_prefix", "methods"};
    const auto m = open_map(f, keys, "a mapping with path_prefix and/or methods");
    if (!m) return std::nullopt;
    limit_filter filter;
    if (const auto* v = m->find("path_prefix")) {
      if (const auto text = read_string(*v, "a path prefix such as /api/")) {
        const bool clean = std::none_of(text->begin(), text->end(), [](char c) {
          return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
        });
        if (!text->starts_with('/')) {
          error(*v, quote(*text) + " does not start with \"/\" (expected a path prefix such as /api/)");
        } else if (!clean) {
          error(*v, quote(*text) + " contains a space or control character (expected a path prefix such as /api/)");
        } else {
          filter.path_prefix = *text;
        }
      }
    }
    if (const auto* v = m->find("methods")) {
      constexpr std::string_view expected = "a list of HTTP methods, e.g. [GET, POST]";
      if (const auto items = open_list(*v, expected)) {
        if (items->empty()) wrong_type_empty(*v, std::string(expected) + ", or no methods key for every method");
        for (const auto& item : *items) {
          auto method = read_string(item, "an HTTP method such as GET or POST");
          if (!method) continue;
          if (!is_token(*method)) {
            error(item, quote(*method) + " is not an HTTP method (expected a method token such as GET or POST)");
            continue;
          }
          std::transform(method->begin(), method->end(), method->begin(), [](char c) {
            return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
          });
          if (std::find(filter.methods.begin(), filter.methods.end(), *method) == filter.methods.end()) {
            filter.methods.push_back(std::move(*method));
          }
        }
      }
    }
    if (filter.path_prefix.empty() && filter.methods.empty()) return std::nullopt;
    return filter;
  }

  void read_overrides(const field& f, std::optional<key_kind> kind, std::vector<limit_override>& out) {
    if (kind == key_kind::global) {
      error(f, "are not allowed with key: global (a global limit has a single bucket: change its rate and burst "
               "instead)");
      return;
    }
    const auto m = open_map(f, {}, "a mapping of key value -> { rate: N/s, burst: N }");
    if (!m) return;
    std::vector<std::pair<std::string, int>> seen;  // canonical value -> line of its first entry
    for (const auto& entry : m->items) {
      limit_override o;
      o.value = entry.key;
      if (entry.key.empty()) {
        error(entry.key_mark, entry.value.path, "\"\" is empty (expected the key value this override is for)");
      } else if (kind == key_kind::ip) {
        if (const auto addr = common::ip_address::parse(entry.key)) {
          o.value = addr->to_string();
        } else {
          error(entry.key_mark, entry.value.path,
                quote(entry.key) + " is not an IP address (expected an IPv4 or IPv6 address as this limit's key "
                                   "is ip, e.g. 203.0.113.7 or 2001:db8::1)");
        }
      }
      if (const auto same = std::find_if(seen.begin(), seen.end(), [&](const auto& s) { return s.first == o.value; });
          same != seen.end()) {
        error(entry.key_mark, entry.value.path,
              quote(entry.key) + " is the same address as the override at line " + std::to_string(same->second) +
                  " (expected each address once)");
      } else {
        seen.emplace_back(o.value, entry.key_mark.line + 1);
      }
      static const std::vector<std::string_view> keys = {"rate", "burst"};
      if (const auto body = open_map(entry.value, keys, "a mapping { rate: N/s, burst: N }")) {
        for (const auto required : {"rate", "burst"}) {
          if (!body->find(required)) missing(*body, required, "every override needs rate and burst");
        }
        if (const auto* v = body->find("rate")) assign(o.refill, read_rate(*v));
        if (const auto* v = body->find("burst")) assign(o.burst, read_integer(*v, 1, no_max));
      }
      out.push_back(std::move(o));
    }
  }

  void read_drain(const field& f, drain_settings& d) {
    static const std::vector<std::string_view> keys = {"delay", "timeout"};
    const auto m = open_map(f, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* v = m->find("delay")) assign(d.delay, read_duration(*v, false));
    if (const auto* v = m->find("timeout")) assign(d.timeout, read_duration(*v, true));
  }

  void read_admin(const field& f, admin_settings& a) {
    static const std::vector<std::string_view> keys = {"listen"};
    const auto m = open_map(f, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* v = m->find("listen")) {
      if (v->node.IsScalar() && v->node.Scalar().empty()) {
        a.listen.reset();
      } else {
        assign(a.listen, read_endpoint(*v, 0, "127.0.0.1:9901, or \"\" for no admin listener"));
      }
    }
  }

  void read_log(const field& f, log_settings& l) {
    static const std::vector<std::string_view> keys = {"level", "format", "access_log"};
    const auto m = open_map(f, keys, "a mapping of the keys " + join_list(keys));
    if (!m) return;
    if (const auto* v = m->find("level")) {
      assign(l.level, read_choice<log_level>(*v, "a log level",
                                             {{"trace", log_level::trace}, {"debug", log_level::debug},
                                              {"info", log_level::info}, {"warn", log_level::warn},
                                              {"error", log_level::error}, {"off", log_level::off}}));
    }
    if (const auto* v = m->find("format")) {
      assign(l.format,
             read_choice<log_format>(*v, "a log format", {{"text", log_format::text}, {"json", log_format::json}}));
    }
    if (const auto* v = m->find("access_log")) assign(l.access_log, read_bool(*v));
  }

  std::string file_;
  std::string_view text_;
  std::vector<config_error> errors_;
};

load_result file_error(const std::string& path, std::string message) {
  load_result result;
  result.errors.push_back(config_error{path, 0, 0, "", std::move(message)});
  return result;
}

}  // namespace

std::string config_error::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!key_path.empty()) out += key_path + ": ";
  out += message;
  return out;
}

load_result load_file(const std::string& path) {
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return file_error(path, "cannot open the file: " + std::generic_category().message(errno));
  std::string text;
  char buf[8192];
  while (true) {
    const std::size_t n = std::fread(buf, 1, sizeof(buf), file.get());
    text.append(buf, n);
    if (text.size() > max_file_bytes) {
      return file_error(path, "the file is larger than " + size_text(max_file_bytes) + " (expected a small YAML file)");
    }
    if (n < sizeof(buf)) break;
  }
  // fopen succeeds on a directory; the read is what fails (EISDIR).
  if (std::ferror(file.get())) return file_error(path, "cannot read the file: " + std::generic_category().message(errno));
  return load_text(text, path);
}

load_result load_text(std::string_view yaml, const std::string& source_name) {
  return loader(source_name).run(yaml);
}

}  // namespace sluice::config
