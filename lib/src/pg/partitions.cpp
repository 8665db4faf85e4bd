#include "gatherstats/pg/partitions.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <string_view>

namespace asio = boost::asio;

namespace gatherstats::pg {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

// How long a partition's DDL waits for a lock before it gives up (and the
// next pass tries again), so that it never queues commits behind it for long.
constexpr std::string_view ddl_lock_timeout = "SET LOCAL lock_timeout = '5s'";
// Partition names: "_p" + YYYYMMDD_HHMMSS is 17 bytes at most.
constexpr std::size_t partition_suffix_bytes = 17;
// The unique key's columns on a partitioned table: a fetch's rows side by
// side in the index (docs/performance.md, "The layouts").
constexpr std::string_view unique_key = "endpoint, fetched_at, key";
constexpr std::string_view unique_suffix = "_endpoint_fetched_at_key_key";

std::string qualified(std::string_view schema, std::string_view name) {
  return quote_identifier(schema) + "." + quote_identifier(name);
}

std::string literal(timestamp t) { return "'" + format_timestamp(t) + "'"; }

std::optional<timestamp> micros(const result& r, int row, int column) {
  if (r.is_null(row, column)) return std::nullopt;
  auto text = r.get(row, column);
  long long v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return timestamp(microseconds(v));
}

// What the catalog says about the table and its partitions.
struct layout {
  bool exists = false;
  bool partitioned = false;
  std::string schema, name;  // as stored (unquoted)
  std::vector<retention::partition> partitions;
  std::vector<std::string> detach_pending;  // partitions a DETACH CONCURRENTLY left half done
  bool has_default = false;

  std::string parent() const { return qualified(schema, name); }
  std::string of(std::string_view partition) const { return qualified(schema, partition); }
};

asio::awaitable<outcome<layout>> read_layout(connection& conn, const table_name& table,
                                             deadline until) {
  std::array<std::string, 1> name{table.quoted()};
  auto found = co_await conn.async_query(
      "SELECT c.relkind = 'p', n.nspname, c.relname FROM pg_class c"
      " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
      name, until);
  if (!found) co_return found.error();
  layout out;
  if (found->rows() == 0) co_return out;
  out.exists = true;
  out.partitioned = found->get(0, 0) == "t";
  out.schema = found->get(0, 1);
  out.name = found->get(0, 2);
  if (!out.partitioned) co_return out;
  // The bounds as pg_get_expr prints them, in the session's time zone with
  // its offset, cast back and turned into microseconds since 1970.
  auto parts = co_await conn.async_query(
      "SELECT c.relname, i.inhdetachpending, b = 'DEFAULT',"
      "  (extract(epoch FROM substring(b FROM 'FROM \\(''([^'']*)''\\)')::timestamptz)"
      "     * 1000000)::bigint,"
      "  (extract(epoch FROM substring(b FROM 'TO \\(''([^'']*)''\\)')::timestamptz)"
      "     * 1000000)::bigint"
      " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,"
      "      pg_get_expr(c.relpartbound, c.oid) AS b"
      " WHERE i.inhparent = to_regclass($1) ORDER BY 4 NULLS FIRST, 1",
      name, until);
  if (!parts) co_return parts.error();
  for (int r = 0; r < parts->rows(); ++r) {
    if (parts->get(r, 2) == "t") {
      out.has_default = true;
      continue;
    }
    retention::partition p{std::string(parts->get(r, 0)), micros(*parts, r, 3),
                           micros(*parts, r, 4)};
    if (parts->get(r, 1) == "t") out.detach_pending.push_back(p.name);
    out.partitions.push_back(std::move(p));
  }
  co_return out;
}

// The statements of one transaction, sent as one query; on failure the
// transaction is rolled back so that the connection stays usable.
asio::awaitable<outcome<void>> in_transaction(connection& conn, const std::string& sql,
                                              deadline until) {
  auto done = co_await conn.async_exec("BEGIN; " + sql + "; COMMIT", until);
  if (done) co_return outcome<void>{};
  failure f = done.error();
  // INERROR or INTRANS after a failed statement; on a lost connection this
  // fails too, and the connection is not used again.
  co_await conn.async_exec("ROLLBACK", until);
  co_return f;
}

std::string bounds(const retention::partition& p) {
  return "FROM (" + (p.from ? literal(*p.from) : std::string("MINVALUE")) + ") TO (" +
         (p.to ? literal(*p.to) : std::string("MAXVALUE")) + ")";
}

retention::partition partition_for(const layout& l, const retention::range& r,
                                   milliseconds interval) {
  return {retention::partition_name(l.name, r.from, interval), r.from, r.to};
}

// A table of its own first, then attached: ATTACH PARTITION takes only a
// SHARE UPDATE EXCLUSIVE lock on the parent, so commits go on (CREATE TABLE
// ... PARTITION OF would take an ACCESS EXCLUSIVE one). IF NOT EXISTS: a
// pass cut short between the two leaves the empty table, which the next
// pass attaches.
asio::awaitable<outcome<void>> create_partition(connection& conn, const layout& l,
                                                const retention::partition& p, deadline until) {
  const std::string q = l.of(p.name);
  co_return co_await in_transaction(
      conn,
      std::string(ddl_lock_timeout) + "; CREATE TABLE IF NOT EXISTS " + q + " (LIKE " + l.parent() +
          " INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION); ALTER TABLE " +
          l.parent() + " ATTACH PARTITION " + q + " FOR VALUES " + bounds(p),
      until);
}

asio::awaitable<outcome<void>> drop_partition(connection& conn, const layout& l,
                                              const retention::partition& p, deadline until) {
  const std::string q = l.of(p.name);
  if (l.has_default)
    co_return co_await in_transaction(conn, std::string(ddl_lock_timeout) + "; DROP TABLE " + q,
                                      until);
  const bool pending =
      std::find(l.detach_pending.begin(), l.detach_pending.end(), p.name) != l.detach_pending.end();
  // Each a statement of its own, outside a transaction (CONCURRENTLY
  // requires it): inserts into the other partitions go on throughout.
  auto detached = co_await conn.async_exec("ALTER TABLE " + l.parent() + " DETACH PARTITION " + q +
                                               (pending ? " FINALIZE" : " CONCURRENTLY"),
                                           until);
  if (!detached) co_return detached.error();
  auto dropped = co_await conn.async_exec("DROP TABLE " + q, until);
  if (!dropped) co_return dropped.error();
  co_return outcome<void>{};
}

failure no_interval(const table_name& table) {
  return failure::permanent("the partitioned table " + table.display() +
                            " has no partition with both bounds, so its interval is unknown: run "
                            "`gatherstatsd migrate --partitioned` to create one");
}

// A converted table's first partition keeps its old unique key (in the
// plain order) beside the partitioned table's until its range has passed:
// then no commit writes to it any more, and the key is dropped (a lock on
// that partition only, for the time its index file takes to go). Returns
// "partition.constraint" for each key dropped.
asio::awaitable<outcome<std::vector<std::string>>> retire_old_keys(connection& conn,
                                                                   const table_name& table,
                                                                   const layout& l, timestamp now,
                                                                   deadline until) {
  std::array<std::string, 1> name{table.quoted()};
  auto found = co_await conn.async_query(
      "SELECT c.relname, k.conname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
      "  JOIN pg_constraint k ON k.conrelid = c.oid AND k.contype = 'u' AND k.conparentid = 0"
      "  JOIN pg_index x ON x.indexrelid = k.conindid"
      " WHERE i.inhparent = to_regclass($1) AND " +
          is_statistics_key("x") + " ORDER BY 1, 2",
      name, until);
  if (!found) co_return found.error();
  std::vector<std::string> retired;
  for (int r = 0; r < found->rows(); ++r) {
    const std::string partition(found->get(r, 0)), key(found->get(r, 1));
    auto p = std::find_if(l.partitions.begin(), l.partitions.end(),
                          [&](const retention::partition& e) { return e.name == partition; });
    if (p == l.partitions.end() || !p->to || *p->to > now) continue;
    auto dropped =
        co_await in_transaction(conn,
                                std::string(ddl_lock_timeout) + "; ALTER TABLE " + l.of(partition) +
                                    " DROP CONSTRAINT " + quote_identifier(key),
                                until);
    if (!dropped) co_return dropped.error();
    retired.push_back(partition + "." + key);
  }
  co_return retired;
}

}  // namespace

bool no_partition_for_row(const failure& f) {
  return f.message.find("(SQLSTATE 23514)") != std::string::npos &&
         f.message.find("no partition of relation") != std::string::npos;
}

asio::awaitable<outcome<std::optional<std::vector<retention::partition>>>> async_list_partitions(
    connection& conn, const table_name& table, deadline until) {
  auto l = co_await read_layout(conn, table, until);
  if (!l) co_return l.error();
  if (!l->partitioned) co_return std::optional<std::vector<retention::partition>>{};
  co_return std::optional<std::vector<retention::partition>>{std::move(l->partitions)};
}

asio::awaitable<partition_upkeep> async_keep_partitions(connection& conn, const table_name& table,
                                                        const std::vector<retention::partition>&,
                                                        std::optional<milliseconds> retention,
                                                        timestamp now, deadline until) {
  partition_upkeep out;
  auto l = co_await read_layout(conn, table, until);
  if (!l) {
    out.problem = l.error();
    co_return out;
  }
  const auto interval = retention::interval_of_partitions(l->partitions);
  if (!l->partitioned || !interval) {
    out.problem = no_interval(table);
    co_return out;
  }
  out.next_pass = retention::upkeep_every(*interval);
  const auto plan = retention::plan_upkeep(l->partitions, *interval, retention, now);
  for (const auto& r : plan.create) {
    auto p = partition_for(*l, r, *interval);
    auto made = co_await create_partition(conn, *l, p, until);
    if (!made) {
      if (!out.problem) out.problem = made.error();
      continue;
    }
    out.created.push_back(std::move(p));
  }
  for (const auto& p : plan.drop) {
    auto gone = co_await drop_partition(conn, *l, p, until);
    if (!gone) {
      if (!out.problem) out.problem = gone.error();
      continue;
    }
    out.dropped.push_back(p);
  }
  auto retired = co_await retire_old_keys(conn, table, *l, now, until);
  if (!retired && !out.problem) out.problem = retired.error();
  if (retired) out.retired_keys = std::move(*retired);
  co_return out;
}

asio::awaitable<outcome<std::optional<retention::partition>>> async_create_partition_for(
    connection& conn, const table_name& table, timestamp t, deadline until) {
  auto l = co_await read_layout(conn, table, until);
  if (!l) co_return l.error();
  const auto interval = retention::interval_of_partitions(l->partitions);
  if (!l->partitioned || !interval) co_return no_interval(table);
  const auto r = retention::interval_of(t, *interval);
  // Another partition may hold part of the interval (the first one of a
  // converted table, one made by hand): then only the rest is created.
  retention::partition p = partition_for(*l, r, *interval);
  for (const auto& e : l->partitions) {
    const bool holds_t = (!e.from || *e.from <= t) && (!e.to || t < *e.to);
    if (holds_t) co_return std::optional<retention::partition>{};
    if (e.to && *e.to > *p.from && *e.to <= t) p.from = e.to;
    if (e.from && *e.from<*p.to&& * e.from> t) p.to = e.from;
  }
  auto made = co_await create_partition(conn, *l, p, until);
  if (!made) co_return made.error();
  co_return std::optional<retention::partition>{std::move(p)};
}

namespace {

// The first partitions of a new table: the current interval and those ahead.
asio::awaitable<outcome<std::vector<retention::partition>>> create_due(
    connection& conn, const layout& l, milliseconds interval, timestamp now, deadline until) {
  std::vector<retention::partition> made;
  for (const auto& r : retention::plan_upkeep(l.partitions, interval, std::nullopt, now).create) {
    auto p = partition_for(l, r, interval);
    auto ok = co_await conn.async_exec(
        "CREATE TABLE " + l.of(p.name) + " PARTITION OF " + l.parent() + " FOR VALUES " + bounds(p),
        until);
    if (!ok) co_return ok.error();
    made.push_back(std::move(p));
  }
  co_return made;
}

std::string create_partitioned_sql(const std::string& parent, const std::string& sequence,
                                   const std::string& unique) {
  return "CREATE SEQUENCE " + sequence + " AS bigint; CREATE TABLE " + parent +
         " (id bigint NOT NULL DEFAULT nextval('" + sequence +
         "'::regclass),"
         " endpoint varchar(1204) NOT NULL,"
         " key varchar(512) NOT NULL,"
         " numeric_value double precision NOT NULL,"
         " fetched_at timestamp with time zone NOT NULL,"
         " CONSTRAINT " +
         unique + " UNIQUE (" + std::string(unique_key) +
         ")) PARTITION BY RANGE (fetched_at); ALTER SEQUENCE " + sequence + " OWNED BY " + parent +
         ".id";
}

// "<name><suffix>", or the suffix alone past PostgreSQL's identifier length.
std::string derived(std::string_view name, std::string_view suffix) {
  if (name.size() + suffix.size() <= max_identifier_bytes)
    return std::string(name) + std::string(suffix);
  return std::string(name.substr(0, max_identifier_bytes - suffix.size())) + std::string(suffix);
}

asio::awaitable<failure> fail_rollback(connection& conn, failure f, deadline until) {
  // INERROR or INTRANS after a failed statement; on a lost connection this
  // fails too, and the connection is not used again.
  co_await conn.async_exec("ROLLBACK", until);
  co_return f;
}

// The conversion of a plain table (see async_migrate_partitioned), without
// the clean-up of a failure (convert).
asio::awaitable<outcome<partitioned_migration>> convert_steps(connection& conn,
                                                              const table_name& table,
                                                              const layout& l,
                                                              milliseconds interval,
                                                              deadline until) {
  partitioned_migration out;
  out.converted = true;
  auto checked = co_await async_check_schema(conn, table, until);
  if (!checked) co_return checked.error();
  std::array<std::string, 1> name{l.parent()};
  // What would stay with the old table, and the unique constraint whose
  // index the new table reuses (its columns in order).
  auto about = co_await conn.async_query(
      "SELECT (SELECT string_agg(DISTINCT v.oid::regclass::text, ', ') FROM pg_depend d"
      "          JOIN pg_rewrite w ON w.oid = d.objid JOIN pg_class v ON v.oid = w.ev_class"
      "         WHERE d.refobjid = t.oid AND v.oid <> t.oid),"
      "       (SELECT string_agg(k.conname || ' on ' || k.conrelid::regclass::text, ', ')"
      "          FROM pg_constraint k WHERE k.confrelid = t.oid AND k.contype = 'f'),"
      "       u.conname, u.columns"
      "  FROM (SELECT to_regclass($1) AS oid) t"
      "  LEFT JOIN LATERAL ("
      "    SELECT k.conname, (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY x.i)"
      "                         FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS x(attnum, i)"
      "                         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.attnum)"
      "                        AS columns"
      "      FROM pg_constraint k JOIN pg_index i ON i.indexrelid = k.conindid"
      "     WHERE k.conrelid = t.oid AND k.contype IN ('u', 'p') AND " +
          is_statistics_key("i") + " ORDER BY k.contype DESC LIMIT 1) u ON true",
      name, until);
  if (!about) co_return about.error();
  const std::string where = "cannot convert " + table.display() + " to the partitioned layout: ";
  if (!about->is_null(0, 0))
    co_return failure::permanent(where + "the view(s) " + std::string(about->get(0, 0)) +
                                 " read it and would stay with the old table; drop them, "
                                 "convert, then create them again");
  if (!about->is_null(0, 1))
    co_return failure::permanent(where + "the foreign key(s) " + std::string(about->get(0, 1)) +
                                 " refer to it");
  if (about->is_null(0, 2))
    co_return failure::permanent(where +
                                 "its unique key on (endpoint, key, fetched_at) is an index, "
                                 "not a constraint, so the partitioned table cannot reuse it");
  const std::string old_unique(about->get(0, 2));
  const std::string unique_columns(about->get(0, 3));

  const auto now = now_utc();
  const auto ahead = std::max<microseconds>(std::chrono::duration_cast<microseconds>(interval),
                                            std::chrono::hours(1));
  const timestamp bound = retention::interval_of(now + ahead, interval).to;
  // Named to sort before every partition of a date.
  out.first_partition = derived(l.name, "_p00000000");
  out.first_partition_to = bound;
  const std::string check = quote_identifier(derived(l.name, "_fetched_at_bound"));
  const std::string parent = l.parent();

  // 1. The CHECK that lets ATTACH skip its scan: added NOT VALID (a moment's
  //    lock, no scan), then validated under a lock that lets inserts go on.
  //    (One left by an attempt that failed is replaced.)
  auto added = co_await in_transaction(conn,
                                       std::string(ddl_lock_timeout) + "; ALTER TABLE " + parent +
                                           " DROP CONSTRAINT IF EXISTS " + check +
                                           "; ALTER TABLE " + parent + " ADD CONSTRAINT " + check +
                                           " CHECK (fetched_at < " + literal(bound) + ") NOT VALID",
                                       until);
  if (!added) co_return added.error();
  const auto validating = steady::now();
  auto valid =
      co_await conn.async_exec("ALTER TABLE " + parent + " VALIDATE CONSTRAINT " + check, until);
  if (!valid) co_return valid.error();
  out.validate_time = std::chrono::duration_cast<microseconds>(steady::now() - validating);

  // 2. The unique index in the partitioned table's column order, built
  //    beside the old one without blocking writes, unless it is that
  //    already (one left invalid by an attempt that failed goes first).
  const std::string first_unique = derived(out.first_partition, unique_suffix);
  const bool reorder = unique_columns != unique_key;
  if (reorder) {
    const auto building = steady::now();
    const std::string index = l.of(first_unique);
    auto dropped = co_await conn.async_exec("DROP INDEX CONCURRENTLY IF EXISTS " + index, until);
    if (!dropped) co_return dropped.error();
    auto built = co_await conn.async_exec("CREATE UNIQUE INDEX CONCURRENTLY " +
                                              quote_identifier(first_unique) + " ON " + parent +
                                              " (" + std::string(unique_key) + ")",
                                          until);
    if (!built) co_return built.error();
    out.index_time = std::chrono::duration_cast<microseconds>(steady::now() - building);
  }

  // 3. The swap, in one transaction under the table's lock.
  auto begun = co_await conn.async_exec(
      "BEGIN; " + std::string(ddl_lock_timeout) + "; SELECT pg_advisory_xact_lock(" +
          std::string(migrate_lock_key) + "); LOCK TABLE " + parent + " IN ACCESS EXCLUSIVE MODE",
      until);
  if (!begun) co_return co_await fail_rollback(conn, begun.error(), until);
  const auto locked = steady::now();
  // The id's sequence (serial or identity) and where it stands, so that the
  // new table's own sequence goes on from there.
  auto id = co_await conn.async_query(
      "SELECT pg_get_serial_sequence($1, 'id'), a.attidentity <> '',"
      "       format_type(a.atttypid, a.atttypmod)"
      "  FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = 'id'"
      "   AND NOT a.attisdropped",
      name, until);
  if (!id) co_return co_await fail_rollback(conn, id.error(), until);
  const std::string first = l.of(out.first_partition);
  const std::string sequence = l.of(derived(l.name, "_id_seq"));
  std::string sql;
  std::string next_id;
  const bool has_sequence = id->rows() == 1 && !id->is_null(0, 0);
  if (has_sequence) {
    std::array<std::string, 1> seq{std::string(id->get(0, 0))};
    auto value = co_await conn.async_query("SELECT nextval($1::regclass)", seq, until);
    if (!value) co_return co_await fail_rollback(conn, value.error(), until);
    next_id = value->get(0, 0);
    const std::string type(id->get(0, 2));
    sql += id->get(0, 1) == "t" ? "ALTER TABLE " + parent + " ALTER COLUMN id DROP IDENTITY; "
                                : "ALTER TABLE " + parent +
                                      " ALTER COLUMN id DROP DEFAULT; "
                                      "DROP SEQUENCE " +
                                      std::string(id->get(0, 0)) + "; ";
    sql += "CREATE SEQUENCE " + sequence + " AS " + type + " START " + next_id + "; ";
  }
  sql += "ALTER TABLE " + parent + " RENAME TO " + quote_identifier(out.first_partition) + "; ";
  // The old unique key stays beside the one in the new order until the
  // partition's range has passed (the upkeep drops it then: dropping it
  // here would hold the lock while its index file is removed, ~0.6 s a GB).
  if (reorder)
    sql += "ALTER TABLE " + first + " RENAME CONSTRAINT " + quote_identifier(old_unique) + " TO " +
           quote_identifier(derived(out.first_partition, "_endpoint_key_fetched_at_key")) +
           "; ALTER TABLE " + first + " ADD CONSTRAINT " + quote_identifier(first_unique) +
           " UNIQUE USING INDEX " + quote_identifier(first_unique) + "; ";
  else
    sql += "ALTER TABLE " + first + " RENAME CONSTRAINT " + quote_identifier(old_unique) + " TO " +
           quote_identifier(first_unique) + "; ";
  sql += "CREATE TABLE " + parent + " (LIKE " + first +
         " INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY RANGE "
         "(fetched_at); ";
  if (has_sequence)
    sql += "ALTER TABLE " + parent + " ALTER COLUMN id SET DEFAULT nextval('" + sequence +
           "'::regclass); ALTER SEQUENCE " + sequence + " OWNED BY " + parent + ".id; ";
  sql += "ALTER TABLE " + parent + " ADD CONSTRAINT " +
         quote_identifier(derived(l.name, unique_suffix)) + " UNIQUE (" + std::string(unique_key) +
         "); ";
  sql += "ALTER TABLE " + parent + " ATTACH PARTITION " + first +
         " FOR VALUES FROM (MINVALUE) TO (" + literal(bound) + "); ";
  sql += "ALTER TABLE " + first + " DROP CONSTRAINT " + check;
  auto swapped = co_await conn.async_exec(sql, until);
  if (!swapped) co_return co_await fail_rollback(conn, swapped.error(), until);
  // Who could use the old table can use the new one (and its sequence, for
  // inserts).
  std::array<std::string, 3> grant_params{first, parent, sequence};
  auto grants = co_await conn.async_query(
      "SELECT string_agg(format('GRANT %s ON %s TO %s', g.privilege_type, $2::text,"
      "         CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END), '; '),"
      "       string_agg(DISTINCT format('GRANT USAGE ON SEQUENCE %s TO %s', $3::text,"
      "         CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END), '; ')"
      "         FILTER (WHERE g.privilege_type = 'INSERT')"
      "  FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) g"
      "  LEFT JOIN pg_roles r ON r.oid = g.grantee"
      " WHERE c.oid = to_regclass($1) AND g.grantee <> c.relowner",
      grant_params, until);
  if (!grants) co_return co_await fail_rollback(conn, grants.error(), until);
  std::string grant_sql;
  if (!grants->is_null(0, 0)) grant_sql += std::string(grants->get(0, 0));
  if (has_sequence && !grants->is_null(0, 1)) grant_sql += "; " + std::string(grants->get(0, 1));
  if (!grant_sql.empty()) {
    auto granted = co_await conn.async_exec(grant_sql, until);
    if (!granted) co_return co_await fail_rollback(conn, granted.error(), until);
  }
  // The interval after the first partition, so that the interval is known
  // (interval_of_partitions) and the next rows have a place.
  retention::partition next{retention::partition_name(l.name, bound, interval), bound,
                            bound + std::chrono::duration_cast<microseconds>(interval)};
  auto made = co_await conn.async_exec(
      "CREATE TABLE " + l.of(next.name) + " PARTITION OF " + parent + " FOR VALUES " + bounds(next),
      until);
  if (!made) co_return co_await fail_rollback(conn, made.error(), until);
  auto committed = co_await conn.async_exec("COMMIT", until);
  if (!committed) co_return committed.error();
  out.lock_held = std::chrono::duration_cast<microseconds>(steady::now() - locked);
  out.partitions_created.push_back(std::move(next));
  co_return out;
}

// A conversion that failed leaves the table plain, and takes back what it
// added: the CHECK, which would refuse every row from its bound on, and the
// index in the new order, which costs every insert. If that cannot be done
// (the connection lost), the error says what remains.
asio::awaitable<outcome<partitioned_migration>> convert(connection& conn, const table_name& table,
                                                        const layout& l, milliseconds interval,
                                                        deadline until) {
  auto done = co_await convert_steps(conn, table, l, interval, until);
  if (done) co_return done;
  const std::string check = quote_identifier(derived(l.name, "_fetched_at_bound"));
  const std::string index = l.of(derived(derived(l.name, "_p00000000"), unique_suffix));
  failure f = done.error();
  if (conn.is_idle()) {
    // On a converted table (a COMMIT whose answer was lost) neither is
    // there any more: the CHECK went in the switch, the index is the
    // partition's unique key, which DROP INDEX refuses to drop.
    auto unchecked = co_await in_transaction(conn,
                                             std::string(ddl_lock_timeout) + "; ALTER TABLE " +
                                                 l.parent() + " DROP CONSTRAINT IF EXISTS " + check,
                                             until);
    if (unchecked) {
      co_await conn.async_exec("DROP INDEX CONCURRENTLY IF EXISTS " + index, until);
      co_return f;
    }
  }
  f.message +=
      "; the constraint " + check + " this run added may remain on " + table.display() +
      ", and would refuse rows from its bound on: run `gatherstatsd migrate --partitioned` "
      "again, or drop it with ALTER TABLE ... DROP CONSTRAINT";
  co_return f;
}

}  // namespace

asio::awaitable<outcome<partitioned_migration>> async_migrate_partitioned(connection& conn,
                                                                          const table_name& table,
                                                                          milliseconds interval,
                                                                          deadline until) {
  if (table.name().size() + partition_suffix_bytes > max_identifier_bytes)
    co_return failure::permanent("table name " + table.display() +
                                 " is too long for the partitioned layout: its partitions' "
                                 "names add 17 bytes to it, and PostgreSQL allows 63");
  auto l = co_await read_layout(conn, table, until);
  if (!l) co_return l.error();
  if (l->exists && !l->partitioned) co_return co_await convert(conn, table, *l, interval, until);
  partitioned_migration out;
  if (l->exists) {
    out.already = true;
    auto kept =
        co_await async_keep_partitions(conn, table, l->partitions, std::nullopt, now_utc(), until);
    if (kept.problem) co_return *kept.problem;
    out.partitions_created = std::move(kept.created);
    co_return out;
  }
  // A new table, in one transaction with its first partitions.
  auto begun = co_await conn.async_exec(
      "BEGIN; SELECT pg_advisory_xact_lock(" + std::string(migrate_lock_key) + ")", until);
  if (!begun) co_return co_await fail_rollback(conn, begun.error(), until);
  // The schema it goes in: the one named, or the first of the search_path.
  std::array<std::string, 1> schema_param{table.schema()};
  auto schema = co_await conn.async_query(
      table.schema().empty() ? "SELECT current_schema()::text, $1::text"
                             : "SELECT (SELECT nspname::text FROM pg_namespace WHERE nspname = $1)",
      schema_param, until);
  if (!schema) co_return co_await fail_rollback(conn, schema.error(), until);
  if (schema->is_null(0, 0)) {
    failure missing = failure::permanent("no schema to create " + table.display() + " in");
    co_return co_await fail_rollback(conn, missing, until);
  }
  layout fresh;
  fresh.schema = schema->get(0, 0);
  fresh.name = table.name();
  fresh.partitioned = true;
  auto made = co_await conn.async_exec(
      create_partitioned_sql(fresh.parent(), fresh.of(derived(table.name(), "_id_seq")),
                             quote_identifier(derived(table.name(), unique_suffix))),
      until);
  if (!made) co_return co_await fail_rollback(conn, made.error(), until);
  auto parts = co_await create_due(conn, fresh, interval, now_utc(), until);
  if (!parts) co_return co_await fail_rollback(conn, parts.error(), until);
  auto committed = co_await conn.async_exec("COMMIT", until);
  if (!committed) co_return committed.error();
  out.created = true;
  out.partitions_created = std::move(*parts);
  co_return out;
}

}  // namespace gatherstats::pg
