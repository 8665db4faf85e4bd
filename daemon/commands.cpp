// `fetch` and `migrate`: the original management command's job, done over the
// library's asynchronous HTTP client and libpq connection on one io_context.
// The only blocking work (reading a file) runs on a one-thread pool.
#include "commands.hpp"

#include "dry_run.hpp"
#include "log_sink.hpp"

#include "gatherstats/config/duration.hpp"
#include "gatherstats/fetch_record.hpp"
#include "gatherstats/http/client.hpp"
#include "gatherstats/io/blocking.hpp"
#include "gatherstats/io/read_file.hpp"
#include "gatherstats/json/flatten.hpp"
#include "gatherstats/pg/connection.hpp"
#include "gatherstats/pg/fetch_log.hpp"
#include "gatherstats/pg/member_table.hpp"
#include "gatherstats/pg/partitions.hpp"
#include "gatherstats/pg/statistic_table.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

namespace asio = boost::asio;
using namespace gatherstats;

namespace gatherstatsd {
namespace {

// How long the database may take for each step of a one-shot command.
constexpr auto database_timeout = std::chrono::seconds(30);
// The endpoint column is varchar(1204) in the original schema.
constexpr std::size_t max_endpoint_chars = 1204;

std::size_t utf8_chars(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

pg::deadline database_deadline() { return std::chrono::steady_clock::now() + database_timeout; }

constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

// A database connection being opened and its table checked, in the
// background: `fetch` reads and flattens the document meanwhile, so the
// server starts its backend while the document arrives (measured on the
// 30,003-row document: about a tenth of the whole run).
struct opening_connection {
  explicit opening_connection(asio::any_io_executor ex)
      : done(ex, asio::steady_timer::time_point::max()) {}
  std::optional<outcome<pg::connection>> result;
  asio::steady_timer done;  // cancelled when `result` is set
};

asio::awaitable<void> open_checked(std::shared_ptr<opening_connection> s, std::string conninfo,
                                   pg::table_name table) {
  auto conn = co_await pg::connection::async_connect(conninfo, database_deadline());
  if (conn) {
    auto checked = co_await pg::async_check_schema(*conn, table, database_deadline());
    if (!checked) conn = checked.error();
  }
  s->result = std::move(conn);
  s->done.cancel();
}

asio::awaitable<outcome<pg::connection>> opened(std::shared_ptr<opening_connection> s) {
  while (!s->result) co_await s->done.async_wait(use_nothrow);
  co_return std::move(*s->result);
}

// Runs `work` on a fresh event loop; prints its failure, if any. Work still
// running in the background when `work` has its answer (a database
// connection being opened for a document that turned out bad) is abandoned:
// the loop stops there, and its destructor frees what was pending.
template <class T, class Work, class OnSuccess>
int run_to_completion(Work work, OnSuccess on_success) {
  asio::io_context io;
  asio::thread_pool blocking(1);
  int exit_code = 1;
  auto finish = [&](std::exception_ptr e, outcome<T> result) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "gatherstatsd: error: internal: " << redact_secrets(ex.what()) << "\n";
      }
      return;
    }
    if (!result) {
      std::cerr << "gatherstatsd: error: " << redact_secrets(result.error().message) << "\n";
      return;
    }
    on_success(*result);
    exit_code = 0;
  };
  asio::co_spawn(io, work(blocking.get_executor()), [&](std::exception_ptr e, outcome<T> result) {
    finish(e, std::move(result));
    io.stop();
  });
  io.run();
  blocking.join();
  return exit_code;
}

struct document_source {
  std::string url;    // http(s) URL, or empty for a file
  std::string path;   // file path, or empty for a URL
  std::string shown;  // for messages
};

outcome<document_source> classify_source(const std::string& text) {
  document_source s;
  if (text.starts_with("http://") || text.starts_with("https://")) {
    s.url = text;
    s.shown = http::redact_url(text);
    return s;
  }
  if (text.starts_with("file://")) {
    auto parsed = boost::urls::parse_uri(text);
    if (!parsed ||
        (parsed->has_authority() && !parsed->host().empty() && parsed->host() != "localhost"))
      return failure::permanent("\"" + http::redact_url(text) +
                                "\" is not a file URL of this machine");
    s.path = parsed->path();
  } else if (text.find("://") != std::string::npos) {
    return failure::permanent("\"" + http::redact_url(text) +
                              "\": unsupported scheme (use http, https or file)");
  } else {
    s.path = text;
  }
  std::error_code ec;
  auto absolute = std::filesystem::absolute(s.path, ec);
  if (!ec) s.path = absolute.lexically_normal().string();
  s.shown = s.path;
  return s;
}

// What `fetch` records, checked before anything is fetched.
struct fetch_plan {
  pg::table_name table;
  document_source source;
  std::string endpoint;  // the value for the endpoint column
};

outcome<fetch_plan> plan_fetch(const fetch_options& o) {
  auto table = pg::table_name::parse(o.table);
  if (!table) return table.error();
  auto source = classify_source(o.source);
  if (!source) return source.error();
  std::string endpoint = source->url;
  if (o.endpoint)
    endpoint = *o.endpoint;
  else if (endpoint.empty())
    endpoint = "file://" + source->path;
  if (utf8_chars(endpoint) > max_endpoint_chars)
    return failure::permanent("the endpoint to record is longer than " +
                              std::to_string(max_endpoint_chars) + " characters");
  return fetch_plan{std::move(*table), std::move(*source), std::move(endpoint)};
}

// Fetches (or reads) and flattens the document: the record to commit.
asio::awaitable<outcome<fetch_record>> async_fetch_record(fetch_options o, fetch_plan plan,
                                                          asio::any_io_executor blocking) {
  json::flatten_options rules;
  rules.values = o.skip_bad_values ? json::value_policy::skip : json::value_policy::strict;
  auto until = std::chrono::steady_clock::now() + o.timeout;

  fetch_record record;
  record.endpoint = std::move(plan.endpoint);
  std::string body;
  if (!plan.source.url.empty()) {
    http::tls_settings tls;
    tls.ca_file = o.ca_file.value_or("");
    auto client = http::client::create(tls);
    if (!client) co_return client.error();
    auto response = co_await client->async_get(plan.source.url, rules.max_body_bytes, until);
    if (!response) co_return response.error();
    body = std::move(response->body);
    record.fetched_at = response->received_at;
  } else {
    auto read = co_await io::async_read_file(blocking, plan.source.path, rules.max_body_bytes);
    if (!read) co_return read.error();
    body = std::move(*read);
    record.fetched_at = now_utc();
  }

  // On the blocking thread, so that this one goes on opening the connection.
  auto flatten_body = [&body, &rules] { return json::flatten(body, rules); };
  auto rows = co_await io::async_run_blocking<decltype(flatten_body())>(blocking, flatten_body);
  if (!rows) co_return failure::permanent(plan.source.shown + ": " + rows.error().message);
  record.rows = std::move(*rows);
  co_return record;
}

asio::awaitable<outcome<std::size_t>> async_fetch(fetch_options o, asio::any_io_executor blocking) {
  auto plan = plan_fetch(o);
  if (!plan) co_return plan.error();
  const pg::table_name table = plan->table;

  auto opening = std::make_shared<opening_connection>(co_await asio::this_coro::executor);
  asio::co_spawn(opening->done.get_executor(),
                 open_checked(opening, o.database.value_or(""), table), asio::detached);

  auto record = co_await async_fetch_record(o, std::move(*plan), blocking);
  if (!record) co_return record.error();

  auto conn = co_await opened(opening);
  if (!conn) co_return conn.error();
  co_return co_await pg::async_commit(*conn, table, *record, database_deadline());
}

// --dry-run: the same record, and no database at all. Named by the source
// as messages show it.
asio::awaitable<outcome<dry_run_result>> async_dry_fetch(fetch_options o,
                                                         asio::any_io_executor blocking) {
  auto plan = plan_fetch(o);
  if (!plan) co_return plan.error();
  dry_run_result result;
  result.name = plan->source.shown;
  auto record = co_await async_fetch_record(o, std::move(*plan), blocking);
  if (!record) co_return record.error();
  result.record = std::move(*record);
  co_return result;
}

// "(endpoint, key)"
std::string column_list(const pg::redundant_index& index) {
  std::string out = "(";
  for (std::size_t i = 0; i < index.columns.size(); ++i) out += (i ? ", " : "") + index.columns[i];
  return out + ")";
}

// What `migrate` did, on stdout: the table, the fetch log, and each
// redundant index, with what to do about it unless it is about to go.
void print_migrated(const migrate_options& o, const pg::table_name& table,
                    const pg::migrated& done) {
  std::cout << (done.table ? "Created table " : "Table ") << o.table
            << (done.table ? "\n" : " already exists and is usable\n");
  const auto log = pg::fetch_log_table(table).display();
  const auto view = pg::endpoint_health_view(table).display();
  if (done.fetch_log)
    std::cout << "Created fetch log " << log << " and view " << view << "\n";
  else
    std::cout << "Fetch log " << log << " already exists; view " << view << " is up to date\n";
  if (done.member_table)
    std::cout << "Created member table " << pg::member_table(table).display()
              << " (for cluster:)\n";
  if (o.drop_redundant_indexes) return;
  // Not the --database: it may hold a password.
  const std::string table_option = o.table == pg::default_table ? "" : " --table " + o.table;
  for (const auto& index : done.redundant_indexes)
    std::cout << "Index " << index.name << " " << column_list(index)
              << " repeats the unique constraint's index: every commit updates it for nothing;"
                 " drop it with: gatherstatsd migrate --drop-redundant-indexes"
              << table_option << "\n";
}

std::string milliseconds_text(std::chrono::microseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f ms", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

std::string partition_list(const std::vector<gatherstats::retention::partition>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

// What `migrate --partitioned` did, on stdout.
void print_partitioned(const migrate_options& o, const pg::partitioned_migration& done) {
  const auto interval = gatherstats::config::format_duration(o.partition_interval);
  if (done.created)
    std::cout << "Created table " << o.table << " partitioned by fetched_at, one partition per "
              << interval << ": " << partition_list(done.partitions_created) << "\n";
  if (done.converted)
    std::cout << "Converted table " << o.table
              << " to the partitioned layout without copying a row: "
              << "its rows are partition " << done.first_partition << " (fetched_at before "
              << pg::format_timestamp(*done.first_partition_to) << "), then one partition per "
              << interval << " from " << partition_list(done.partitions_created)
              << "; checking the bound took " << milliseconds_text(done.validate_time)
              << (done.index_time.count() > 0
                      ? ", building the unique index in the order (endpoint, fetched_at, key) " +
                            milliseconds_text(done.index_time)
                      : std::string())
              << " (writes went on), the switch held the table's lock for "
              << milliseconds_text(done.lock_held) << "\n";
  if (done.already)
    std::cout << "Table " << o.table << " is partitioned already"
              << (done.partitions_created.empty()
                      ? std::string("; its partitions are up to date")
                      : "; created partitions " + partition_list(done.partitions_created))
              << "\n";
}

// What async_migrate gives run_migrate: nothing more (it printed as it went).
struct migrate_finished {};

// Migrates and checks, prints what it did as it goes, then, with
// --drop-redundant-indexes, drops the redundant indexes one by one, each
// line printed once its index is gone (so a failure halfway leaves the
// lines of what was done, and the error on stderr).
asio::awaitable<outcome<migrate_finished>> async_migrate(migrate_options o, asio::any_io_executor) {
  auto table = pg::table_name::parse(o.table);
  if (!table) co_return table.error();
  auto conn = co_await pg::connection::async_connect(o.database.value_or(""), database_deadline());
  if (!conn) co_return conn.error();
  if (o.partitioned) {
    // No database step deadline here: validating a big table's bound scans
    // it (inserts go on meanwhile), which may take longer than 30 s.
    auto parted = co_await pg::async_migrate_partitioned(*conn, *table, o.partition_interval,
                                                         pg::deadline::max());
    if (!parted) co_return parted.error();
    print_partitioned(o, *parted);
  }
  auto done = co_await pg::async_migrate(*conn, *table, database_deadline());
  if (!done) co_return done.error();
  print_migrated(o, *table, *done);
  if (!o.drop_redundant_indexes) co_return migrate_finished{};
  if (done->redundant_indexes.empty()) std::cout << "No redundant index on " << o.table << "\n";
  for (const auto& index : done->redundant_indexes) {
    std::cout << std::flush;
    auto dropped = co_await pg::async_drop_index(*conn, index, database_deadline());
    if (!dropped) co_return dropped.error();
    std::cout << "Dropped index " << index.name << " " << column_list(index) << "\n";
  }
  co_return migrate_finished{};
}

}  // namespace

int run_fetch(const fetch_options& options) {
  if (options.dry_run)
    return run_to_completion<dry_run_result>(
        [&](asio::any_io_executor blocking) { return async_dry_fetch(options, blocking); },
        [&](const dry_run_result& result) {
          std::cout << format_dry_run(options.format, {result}) << std::flush;
        });
  return run_to_completion<std::size_t>(
      [&](asio::any_io_executor blocking) { return async_fetch(options, blocking); },
      [](const std::size_t& created) { std::cout << "Created " << created << " object(s)\n"; });
}

int run_migrate(const migrate_options& options) {
  return run_to_completion<migrate_finished>(
      [&](asio::any_io_executor blocking) { return async_migrate(options, blocking); },
      [](const migrate_finished&) {});
}

}  // namespace gatherstatsd
