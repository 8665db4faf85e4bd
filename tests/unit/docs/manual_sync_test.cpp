// The manual pages (docs/man/*.scd) say what `gatherstatsd --help` and docs/
// say: the same options, commands, exit codes and configuration keys, with
// the same types and defaults. The pages' form, which the parsers below rely
// on, is described in a comment at the top of each .scd file.
#include "command_line.hpp"

#include <catch2/catch.hpp>

#include <cctype>
#include <cstddef>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace {

const std::string source_dir = GATHERSTATS_SOURCE_DIR;
const std::string daemon_page = "docs/man/gatherstatsd.8.scd";
const std::string config_page = "docs/man/gatherstats.yaml.5.scd";
const std::string command_line_doc = "docs/command-line.md";
const std::string configuration_doc = "docs/configuration.md";

using lines = std::vector<std::string>;

// The lines of a file of the source tree (path relative to its root).
lines read_lines(const std::string& relative) {
  std::ifstream in(source_dir + "/" + relative);
  INFO("reading " << source_dir << "/" << relative);
  REQUIRE(in.is_open());
  lines out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Every match of the first group of `re` in `text`.
std::vector<std::string> matches(const std::string& text, const std::regex& re) {
  std::vector<std::string> out;
  for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it)
    out.push_back((*it)[1].str());
  return out;
}

std::set<std::string> as_set(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

// `text` without backticks, with each run of whitespace made one space and
// none at either end.
std::string normalise(const std::string& text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '`') continue;
    if (c == ' ' || c == '\t' || c == '\n') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// Reports each name that is in one set and not in the other, naming both
// places, and returns whether the sets are equal.
bool check_same_names(const std::string& what, const std::set<std::string>& a,
                      const std::string& a_place, const std::set<std::string>& b,
                      const std::string& b_place) {
  for (const auto& name : a)
    if (!b.contains(name))
      FAIL_CHECK(what << " " << name << " is in " << a_place << " but not in " << b_place);
  for (const auto& name : b)
    if (!a.contains(name))
      FAIL_CHECK(what << " " << name << " is in " << b_place << " but not in " << a_place);
  return a == b;
}

// --- scdoc --------------------------------------------------------------------

// The lines of an scdoc file that are not comments, with the lines of
// literal blocks (```) left out, so that neither is taken for a heading or
// an entry.
lines scdoc_text(const lines& file) {
  lines out;
  bool literal = false;
  for (const auto& line : file) {
    if (!literal && line.starts_with("; ")) continue;
    const auto start = line.find_first_not_of('\t');
    if (start != std::string::npos && line.compare(start, std::string::npos, "```") == 0) {
      literal = !literal;
      continue;
    }
    if (!literal) out.push_back(line);
  }
  return out;
}

// The lines of the level-1 section `# heading`, up to the next one.
lines scdoc_section(const lines& text, const std::string& heading) {
  lines out;
  bool in = false;
  for (const auto& line : text) {
    if (line.starts_with("# ")) {
      if (in) break;
      in = line == "# " + heading;
      continue;
    }
    if (in) out.push_back(line);
  }
  INFO("looking for the section \"# " << heading << "\"");
  REQUIRE(in);
  return out;
}

// The entries of a section: the text between the asterisks of every line
// that starts with a bold word at column 0 (`*--config* _FILE_` gives
// "--config"). A line that starts with an asterisk but not so is reported.
std::vector<std::string> scdoc_entries(const lines& section, const std::string& where) {
  static const std::regex entry(R"(^\*([^*\s][^*]*)\*)");
  std::vector<std::string> out;
  for (const auto& line : section) {
    if (!line.starts_with("*")) continue;
    std::smatch m;
    if (std::regex_search(line, m, entry))
      out.push_back(m[1].str());
    else
      FAIL_CHECK(where << ": a line that starts with \"*\" but is not an entry: " << line);
  }
  return out;
}

// Each name of `entries` once; a name with two entries is reported.
std::set<std::string> unique_entries(const std::vector<std::string>& entries,
                                     const std::string& where) {
  std::set<std::string> out;
  for (const auto& e : entries)
    if (!out.insert(e).second) FAIL_CHECK(where << " has two entries for " << e);
  return out;
}

// --- markdown -----------------------------------------------------------------

// The lines of the markdown section `## heading` (level 2), up to the next
// heading of level 2 or 1, fenced code blocks left out.
lines markdown_section(const lines& file, const std::string& heading) {
  lines out;
  bool in = false, fenced = false;
  for (const auto& line : file) {
    if (line.starts_with("```")) {
      fenced = !fenced;
      continue;
    }
    if (fenced) continue;
    if (line.starts_with("# ") || line.starts_with("## ")) {
      if (in) break;
      in = line == "## " + heading;
      continue;
    }
    if (in) out.push_back(line);
  }
  INFO("looking for the section \"## " << heading << "\"");
  REQUIRE(in);
  return out;
}

// The cells of a markdown table row, without the outer pipes, trimmed; an
// escaped pipe (\|) stays in its cell, as a pipe.
std::vector<std::string> table_cells(const std::string& row) {
  std::vector<std::string> cells;
  std::string cell;
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (row[i] == '\\' && i + 1 < row.size() && row[i + 1] == '|') {
      cell += '|';
      ++i;
    } else if (row[i] == '|') {
      cells.push_back(normalise(cell));
      cell.clear();
    } else {
      cell += row[i];
    }
  }
  cells.push_back(normalise(cell));
  // "| a | b |" splits into "", "a", "b", "".
  if (!cells.empty() && cells.front().empty()) cells.erase(cells.begin());
  if (!cells.empty() && cells.back().empty()) cells.pop_back();
  return cells;
}

// "|---|---|", the line under a table's header.
bool is_separator_row(const std::string& line) {
  static const std::regex separator(R"(\|(\s*:?-+:?\s*\|)+\s*)");
  return std::regex_match(line, separator);
}

// A row of a markdown table, its cells found by the header's names ("key",
// "type", ...).
struct table_row {
  std::vector<std::string> header;
  std::vector<std::string> cells;
  std::optional<std::string> cell(const std::string& column) const {
    for (std::size_t i = 0; i < header.size() && i < cells.size(); ++i)
      if (header[i] == column) return cells[i];
    return std::nullopt;
  }
};

// --- configuration keys ---------------------------------------------------------

struct key_entry {
  std::string key;
  std::string type;
  std::optional<std::string> default_value;  // none: no default given
};

struct key_section {
  std::string name;  // "database", "endpoints: auth", "top level"
  std::vector<key_entry> keys;
};

std::string describe(const key_entry& e) {
  return "(" + e.type + (e.default_value ? "; default: " + *e.default_value : "") + ")";
}

const key_section* section_named(const std::vector<key_section>& sections,
                                 const std::string& name) {
  for (auto& s : sections)
    if (s.name == name) return &s;
  return nullptr;
}

// The tables of docs/configuration.md's "## Keys": one section per table,
// named by its "### `name`" heading, or "endpoints: auth" for the table
// under a "`auth`:" line within endpoints. An empty default cell, or a
// table without a default column, is no default.
std::vector<key_section> documented_keys() {
  const lines keys = markdown_section(read_lines(configuration_doc), "Keys");
  static const std::regex sub_table(R"(^`([a-z_]+)`:\s*$)");
  std::vector<key_section> out;
  std::string heading, current;
  std::vector<std::string> header;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string& line = keys[i];
    std::smatch m;
    if (line.starts_with("### ")) {
      heading = normalise(line.substr(4));
      for (auto& c : heading) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      current = heading;
      header.clear();
    } else if (std::regex_match(line, m, sub_table)) {
      current = heading + ": " + m[1].str();
      header.clear();
    } else if (line.starts_with("|") && i + 1 < keys.size() && is_separator_row(keys[i + 1])) {
      header = table_cells(line);
      ++i;
    } else if (line.starts_with("|") && !header.empty()) {
      table_row row{header, table_cells(line)};
      auto key = row.cell("key");
      auto type = row.cell("type");
      if (!key || !type || key->empty()) {
        FAIL_CHECK(configuration_doc << ": a row of \"" << current
                                     << "\" without a key or a type: " << line);
        continue;
      }
      auto def = row.cell("default");
      if (def && def->empty()) def.reset();
      if (out.empty() || out.back().name != current) out.push_back({current, {}});
      out.back().keys.push_back({*key, *type, def});
    } else if (!line.starts_with("|")) {
      header.clear();
    }
  }
  return out;
}

// The entries of gatherstats.yaml.5.scd's "# KEYS": one section per
// "## name", each entry a line "*KEY* (TYPE; default: DEFAULT)" or
// "*KEY* (TYPE)". Every section is listed, with or without entries. A line
// that starts with a bold word and " (" is an entry, and one not of that form
// is reported; a line of prose may start with a bold word.
std::vector<key_section> manual_keys() {
  const lines keys = scdoc_section(scdoc_text(read_lines(config_page)), "KEYS");
  static const std::regex entry(R"(^\*([a-z_]+)\* \((.+)\)$)");
  static const std::regex looks_like_entry(R"(^\*[^*\s][^*]*\* \()");
  const std::string default_mark = "; default: ";
  std::vector<key_section> out;
  for (const auto& line : keys) {
    std::smatch m;
    if (line.starts_with("## ")) {
      out.push_back({line.substr(3), {}});
    } else if (std::regex_search(line, looks_like_entry)) {
      if (out.empty() || !std::regex_match(line, m, entry)) {
        FAIL_CHECK(config_page << ": a line that starts with \"*\" but is not an entry "
                                  "\"*KEY* (TYPE; default: DEFAULT)\" in a ## section: "
                               << line);
        continue;
      }
      const std::string inside = m[2].str();
      key_entry e{m[1].str(), normalise(inside), std::nullopt};
      if (auto at = inside.find(default_mark); at != std::string::npos) {
        e.type = normalise(inside.substr(0, at));
        e.default_value = normalise(inside.substr(at + default_mark.size()));
      }
      out.back().keys.push_back(e);
    }
  }
  return out;
}

// The lines of the first paragraph of a section (after its heading and any
// blank lines, up to the next blank line), joined by spaces.
std::string first_paragraph(const lines& section_lines) {
  std::string out;
  for (const auto& line : section_lines) {
    if (line.find_first_not_of(" \t") == std::string::npos) {
      if (!out.empty()) break;
      continue;
    }
    out += line + " ";
  }
  return out;
}

// The lines under the heading `h` + `name` ("## defaults" in scdoc, "###
// `defaults`" in markdown) up to the next heading of that level or above.
lines subsection(const lines& text, const std::string& h, const std::string& name) {
  lines out;
  bool in = false;
  for (const auto& line : text) {
    if (line.starts_with(h) || line.starts_with("# ") || line.starts_with("## ")) {
      if (in) break;
      in = line == h + name;
      continue;
    }
    if (in) out.push_back(line);
  }
  INFO("looking for the section \"" << h << name << "\"");
  REQUIRE(in);
  return out;
}

}  // namespace

TEST_CASE(
    "the manual page has an entry for every option and command of --help, and "
    "docs/command-line.md mentions every option",
    "[docs]") {
  static const std::regex option(R"((--[a-z][a-z-]*))");
  const std::set<std::string> help_options = as_set(matches(gatherstatsd::usage, option));
  INFO("options in --help: " << help_options.size());
  REQUIRE(help_options.size() >= 10);

  const lines page = scdoc_text(read_lines(daemon_page));

  // OPTIONS: one entry per option, "*--name*" first on its line.
  const std::string options_place = daemon_page + " (OPTIONS)";
  const std::set<std::string> page_options =
      unique_entries(scdoc_entries(scdoc_section(page, "OPTIONS"), options_place), options_place);
  for (const auto& o : page_options)
    if (!std::regex_match(o, option))
      FAIL_CHECK(options_place << ": the entry \"" << o << "\" is not an option --name");
  REQUIRE(page_options.size() >= 10);
  CHECK(check_same_names("the option", help_options, "gatherstatsd --help", page_options,
                         options_place));

  // SYNOPSIS: every option appears in one of the forms.
  std::string synopsis;
  for (const auto& line : scdoc_section(page, "SYNOPSIS")) synopsis += line + "\n";
  CHECK(check_same_names("the option", help_options, "gatherstatsd --help",
                         as_set(matches(synopsis, option)), daemon_page + " (SYNOPSIS)"));

  // docs/command-line.md: every option is mentioned, and nothing that looks
  // like one is not an option.
  std::string doc;
  for (const auto& line : read_lines(command_line_doc)) doc += line + "\n";
  const std::set<std::string> doc_options = as_set(matches(doc, option));
  REQUIRE(doc_options.size() >= 10);
  CHECK(check_same_names("the option", help_options, "gatherstatsd --help", doc_options,
                         command_line_doc));

  // COMMANDS: one entry per command of --help ("gatherstatsd fetch ...").
  static const std::regex command(R"(gatherstatsd ([a-z][a-z-]*))");
  const std::set<std::string> help_commands = as_set(matches(gatherstatsd::usage, command));
  INFO("commands in --help: " << help_commands.size());
  REQUIRE(help_commands.size() >= 2);
  const std::string commands_place = daemon_page + " (COMMANDS)";
  std::set<std::string> page_commands;
  for (const auto& e : unique_entries(
           scdoc_entries(scdoc_section(page, "COMMANDS"), commands_place), commands_place))
    page_commands.insert(e);
  CHECK(check_same_names("the command", help_commands, "gatherstatsd --help", page_commands,
                         commands_place));
}

TEST_CASE("the manual page's exit statuses are the exit codes of docs/command-line.md", "[docs]") {
  std::set<std::string> doc_codes;
  static const std::regex code_row(R"(^\|\s*([0-9]+)\s*\|)");
  for (const auto& line : markdown_section(read_lines(command_line_doc), "Exit codes")) {
    std::smatch m;
    if (std::regex_search(line, m, code_row)) doc_codes.insert(m[1].str());
  }
  INFO("exit codes in " << command_line_doc << ": " << doc_codes.size());
  REQUIRE(doc_codes.size() >= 3);

  const std::string place = daemon_page + " (EXIT STATUS)";
  const std::set<std::string> page_codes = unique_entries(
      scdoc_entries(scdoc_section(scdoc_text(read_lines(daemon_page)), "EXIT STATUS"), place),
      place);
  for (const auto& c : page_codes)
    if (c.find_first_not_of("0123456789") != std::string::npos)
      FAIL_CHECK(place << ": the entry \"" << c << "\" is not an exit code");
  CHECK(check_same_names("the exit code", doc_codes, command_line_doc, page_codes, place));
}

TEST_CASE(
    "the manual page lists every configuration key of docs/configuration.md, with its "
    "type and default",
    "[docs]") {
  const std::vector<key_section> documented = documented_keys();
  const std::vector<key_section> manual = manual_keys();

  // The manual's sections, in its order; the docs have a table for each
  // but defaults (which are an endpoint's keys).
  const std::vector<std::string> expected_sections = {
      "database", "defaults", "endpoints", "endpoints: auth", "endpoints: tls",
      "spool",    "metrics",  "cluster",   "top level"};
  std::vector<std::string> manual_sections, documented_sections;
  for (const auto& s : manual) manual_sections.push_back(s.name);
  for (const auto& s : documented) documented_sections.push_back(s.name);
  CHECK(manual_sections == expected_sections);
  std::vector<std::string> tables = expected_sections;
  std::erase(tables, "defaults");
  CHECK(documented_sections == tables);

  std::size_t documented_count = 0, manual_count = 0;
  for (const auto& s : documented) documented_count += s.keys.size();
  for (const auto& s : manual) manual_count += s.keys.size();
  INFO("keys in " << configuration_doc << ": " << documented_count << ", in " << config_page << ": "
                  << manual_count);
  REQUIRE(documented_count >= 30);
  REQUIRE(manual_count >= 30);

  for (const auto& doc_section : documented) {
    const std::string place = config_page + " (## " + doc_section.name + ")";
    const key_section* page_section = section_named(manual, doc_section.name);
    if (!page_section) {
      FAIL_CHECK(config_page << " has no section \"## " << doc_section.name << "\"");
      continue;
    }
    std::set<std::string> doc_keys, page_keys;
    std::vector<std::string> doc_order, page_order;
    for (const auto& e : doc_section.keys) {
      doc_keys.insert(e.key);
      doc_order.push_back(e.key);
    }
    for (const auto& e : page_section->keys) {
      if (!page_keys.insert(e.key).second) FAIL_CHECK(place << " has two entries for " << e.key);
      page_order.push_back(e.key);
    }
    if (!check_same_names("the key", doc_keys, configuration_doc + " (" + doc_section.name + ")",
                          page_keys, place))
      continue;
    if (doc_order != page_order)
      FAIL_CHECK(place << " lists the keys in another order than " << configuration_doc);

    for (const auto& d : doc_section.keys)
      for (const auto& p : page_section->keys) {
        if (d.key != p.key) continue;
        if (d.type != p.type || d.default_value != p.default_value)
          FAIL_CHECK("the key " << d.key << " of \"" << doc_section.name
                                << "\": " << configuration_doc << " says " << describe(d) << ", "
                                << config_page << " says " << describe(p));
      }
  }

  // defaults: the first paragraph of each names every key of an endpoint
  // (those it inherits, and those it does not).
  std::set<std::string> endpoint_keys;
  for (const auto& s : documented)
    if (s.name == "endpoints")
      for (const auto& e : s.keys) endpoint_keys.insert(e.key);
  REQUIRE(endpoint_keys.size() >= 10);

  const std::string doc_paragraph = first_paragraph(
      subsection(markdown_section(read_lines(configuration_doc), "Keys"), "### ", "`defaults`"));
  CHECK(check_same_names("the endpoint key", endpoint_keys, configuration_doc + " (endpoints)",
                         as_set(matches(doc_paragraph, std::regex("`([a-z_]+)`"))),
                         configuration_doc + " (defaults, first paragraph)"));
  const std::string page_paragraph = first_paragraph(
      subsection(scdoc_section(scdoc_text(read_lines(config_page)), "KEYS"), "## ", "defaults"));
  CHECK(check_same_names("the endpoint key", endpoint_keys, configuration_doc + " (endpoints)",
                         as_set(matches(page_paragraph, std::regex(R"(\*([a-z_]+)\*)"))),
                         config_page + " (## defaults, first paragraph)"));
}
