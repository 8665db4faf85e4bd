#include "support/test_env.hpp"

#include <libpq-fe.h>
#include <catch2/catch.hpp>

#include <unistd.h>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace test {
namespace {

std::string read_first_line(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line) || line.empty()) FAIL("cannot read " << path << ": " << what);
  return line;
}

struct conn_closer {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;

conn_ptr connect_blocking(const std::string& conninfo) {
  conn_ptr c(PQconnectdb(conninfo.c_str()));
  if (PQstatus(c.get()) != CONNECTION_OK)
    FAIL("cannot connect to the test database (" << conninfo << "): " << PQerrorMessage(c.get()));
  return c;
}

std::vector<std::vector<std::string>> query_on(PGconn* c, const std::string& sql) {
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c, sql.c_str()), &PQclear);
  auto status = PQresultStatus(r.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    FAIL("SQL failed: " << sql << ": " << PQresultErrorMessage(r.get()));
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    auto& row = rows.emplace_back();
    for (int j = 0; j < PQnfields(r.get()); ++j) row.emplace_back(PQgetvalue(r.get(), i, j));
  }
  return rows;
}

}  // namespace

std::string daemon_bin() { return GATHERSTATS_DAEMON_BIN; }
std::string source_dir() { return GATHERSTATS_SOURCE_DIR; }
std::string cert_dir() { return GATHERSTATS_TEST_CERT_DIR; }

std::string admin_conninfo() {
  return read_first_line(std::string(GATHERSTATS_TEST_PG_DIR) + "/conninfo",
                         "is the PostgreSQL fixture running? (ctest starts it)");
}

std::string tcp_admin_conninfo() {
  return read_first_line(std::string(GATHERSTATS_TEST_PG_DIR) + "/tcp_conninfo",
                         "is the PostgreSQL fixture running? (ctest starts it)");
}

scratch_database::scratch_database() : scratch_database(admin_conninfo()) {}

scratch_database::scratch_database(std::string admin_conninfo) : admin_(std::move(admin_conninfo)) {
  static std::atomic<int> serial{0};
  name_ = "gs_test_" + std::to_string(::getpid()) + "_" + std::to_string(++serial);
  auto admin = connect_blocking(admin_);
  query_on(admin.get(), "CREATE DATABASE " + name_);
  // In a libpq conninfo the last value of a keyword wins.
  conninfo_ = admin_ + " dbname=" + name_;
}

scratch_database::~scratch_database() {
  conn_ptr admin(PQconnectdb(admin_.c_str()));
  PQclear(PQexec(admin.get(), ("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)").c_str()));
}

void scratch_database::exec(const std::string& sql) const {
  auto c = connect_blocking(conninfo_);
  query_on(c.get(), sql);
}

std::vector<std::vector<std::string>> scratch_database::query(const std::string& sql) const {
  auto c = connect_blocking(conninfo_);
  return query_on(c.get(), sql);
}

long long scratch_database::count(const std::string& table) const {
  return std::stoll(query("SELECT count(*) FROM " + table).at(0).at(0));
}

void scratch_database::create_original_table() const {
  // Exactly what `manage.py sqlmigrate gatherstats 0001` prints for the
  // original's migration 0001_create_statistic_model.py (Django 2.0,
  // PostgreSQL): the table, its two indexes (which repeat the unique
  // constraint's index: docs/migrating.md) and the unique constraint.
  exec(
      "BEGIN;"
      "CREATE TABLE \"gatherstats_statistic\" (\"id\" serial NOT NULL PRIMARY KEY,"
      " \"endpoint\" varchar(1204) NOT NULL, \"key\" varchar(512) NOT NULL,"
      " \"numeric_value\" double precision NOT NULL,"
      " \"fetched_at\" timestamp with time zone NOT NULL);"
      "CREATE INDEX \"gatherstats_endpoin_3d040d_idx\" ON \"gatherstats_statistic\""
      " (\"endpoint\");"
      "CREATE INDEX \"gatherstats_endpoin_ca0383_idx\" ON \"gatherstats_statistic\""
      " (\"endpoint\", \"key\", \"fetched_at\");"
      "ALTER TABLE \"gatherstats_statistic\" ADD CONSTRAINT"
      " \"gatherstats_statistic_endpoint_key_fetched_at_3c4ad5a4_uniq\""
      " UNIQUE (\"endpoint\", \"key\", \"fetched_at\");"
      "COMMIT;");
}

void scratch_database::migrate() const {
  auto r = run({daemon_bin(), "migrate", "--database", conninfo_});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
}

test_server::test_server(std::string cert, std::string root, std::string listen)
    : tls_(!cert.empty()) {
  std::vector<std::string> argv{GATHERSTATS_TEST_SERVER_BIN, "--listen", listen};
  if (tls_) {
    argv.insert(argv.end(),
                {"--tls", cert_dir() + "/" + cert + ".pem", cert_dir() + "/" + cert + ".key"});
  }
  if (!root.empty()) argv.insert(argv.end(), {"--root", root});
  process_ = std::make_unique<child>(argv);
  auto line = process_->read_line(std::chrono::seconds(10));
  if (!line || !line->starts_with("listening on "))
    FAIL("the test server did not start: " << line.value_or("(no output)"));
  port_ = static_cast<std::uint16_t>(std::stoi(line->substr(13)));
}

std::string test_server::url(const std::string& path, const std::string& host) const {
  return std::string(tls_ ? "https://" : "http://") + host + ":" + std::to_string(port_) + path;
}

temp_dir::temp_dir() {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "gatherstats-test.XXXXXX").string();
  if (!::mkdtemp(pattern.data())) FAIL("mkdtemp failed");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::filesystem::path temp_dir::write(const std::string& name, const std::string& content) const {
  auto p = path_ / name;
  std::ofstream(p, std::ios::binary) << content;
  return p;
}

private_cluster::private_cluster() {
  auto r = run({script(), "start", state_.path().string()}, std::chrono::seconds(120));
  if (r.exit_code != 0) FAIL("cannot start a private PostgreSQL cluster: " << r.err);
  conninfo_ = read_first_line((state_.path() / "conninfo").string(), "pg-cluster start");
  tcp_conninfo_ = read_first_line((state_.path() / "tcp_conninfo").string(), "pg-cluster start");
}

pid_t private_cluster::postmaster_pid() const {
  auto dir = read_first_line((state_.path() / "cluster_dir").string(), "pg-cluster start");
  return static_cast<pid_t>(std::stol(read_first_line(dir + "/data/postmaster.pid", "running?")));
}

private_cluster::~private_cluster() { run({script(), "stop", state_.path().string()}); }

void private_cluster::down() {
  auto r = run({script(), "down", state_.path().string()}, std::chrono::seconds(120));
  if (r.exit_code != 0) FAIL("cannot stop the private PostgreSQL server: " << r.err);
}

void private_cluster::up() {
  auto r = run({script(), "up", state_.path().string()}, std::chrono::seconds(120));
  if (r.exit_code != 0) FAIL("cannot start the private PostgreSQL server again: " << r.err);
}

std::string private_cluster::script() { return source_dir() + "/tests/support/pg-cluster"; }

}  // namespace test

namespace test {
namespace {

std::string pgbouncer_script() { return source_dir() + "/tests/support/pgbouncer-pool"; }

// The processes whose parent is `parent` (from /proc/PID/stat).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const auto name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 1));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

}  // namespace

std::string pgbouncer_conninfo() {
  return read_first_line(std::string(GATHERSTATS_TEST_PGBOUNCER_DIR) + "/conninfo",
                         "is the PgBouncer fixture running? (ctest starts it for [pgbouncer])");
}

std::string through_pgbouncer(const scratch_database& db) {
  return pgbouncer_conninfo() + " dbname=" + db.name();
}

private_pgbouncer::private_pgbouncer(const private_cluster& pg) {
  auto r = run({pgbouncer_script(), "start", state_.path().string(), pg.state_dir().string()},
               std::chrono::seconds(60));
  if (r.exit_code != 0) FAIL("cannot start PgBouncer: " << r.err);
  conninfo_ = read_first_line((state_.path() / "conninfo").string(), "pgbouncer-pool start");
}

private_pgbouncer::~private_pgbouncer() {
  run({pgbouncer_script(), "stop", state_.path().string()});
}

std::string private_pgbouncer::conninfo_for(const scratch_database& db) const {
  return conninfo_ + " dbname=" + db.name();
}

frozen_server::frozen_server(pid_t postmaster) {
  // The postmaster first, so that it starts no process meanwhile.
  if (::kill(postmaster, SIGSTOP) != 0) FAIL("cannot stop the postmaster " << postmaster);
  stopped_.push_back(postmaster);
  for (pid_t child : children_of(postmaster))
    if (::kill(child, SIGSTOP) == 0) stopped_.push_back(child);
}

frozen_server::~frozen_server() { thaw(); }

void frozen_server::thaw() {
  for (auto it = stopped_.rbegin(); it != stopped_.rend(); ++it) ::kill(*it, SIGCONT);
  stopped_.clear();
}

pg_pair::pg_pair() : state_(GATHERSTATS_TEST_PAIR_DIR) {
  auto r =
      run({source_dir() + "/tests/support/pg-pair", "ensure", state_}, std::chrono::seconds(180));
  if (r.exit_code != 0) FAIL("cannot make the PostgreSQL pair whole: " << r.err);
}

std::string pg_pair::read(const std::string& file) const {
  return read_first_line(state_ + "/" + file, "is the pg-pair fixture running?");
}
std::string pg_pair::primary_conninfo() const { return read("primary"); }
std::string pg_pair::standby_conninfo() const { return read("standby"); }
std::string pg_pair::primary_port() const { return read("primary_port"); }
std::string pg_pair::standby_port() const { return read("standby_port"); }

std::string pg_pair::admin_conninfo() const {
  // In a conninfo the last value of a keyword wins.
  return primary_conninfo() + " host=127.0.0.1,127.0.0.1 port=" + primary_port() + "," +
         standby_port() + " target_session_attrs=read-write";
}

void pg_pair::kill_primary() {
  auto r = run({source_dir() + "/tests/support/pg-pair", "kill-primary", state_},
               std::chrono::seconds(60));
  if (r.exit_code != 0) FAIL("cannot kill the primary: " << r.err);
}

}  // namespace test
