// The member table's statements. Each is one statement with text
// parameters, so no session state is needed (PgBouncer, transaction pooling).
#include "gatherstats/pg/member_table.hpp"

#include <array>
#include <charconv>

namespace asio = boost::asio;

namespace gatherstats::pg {
namespace {

double to_double(std::string_view s) {
  double v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::size_t to_size(std::string_view s) {
  std::size_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// The columns every read returns, in this order, from a row source `m`.
constexpr std::string_view row_columns =
    "m.member, m.view, m.endpoints,"
    " extract(epoch FROM m.joined_at)::float8, extract(epoch FROM m.lease_until)::float8,"
    " (extract(epoch FROM m.lease_until - now()) * 1000)::bigint, m.config";

member_row read_row(const result& r, int i) {
  member_row m;
  m.name = std::string(r.get(i, 0));
  m.view = std::string(r.get(i, 1));
  m.endpoints = to_size(r.get(i, 2));
  m.joined_at = to_double(r.get(i, 3));
  m.lease_until = to_double(r.get(i, 4));
  long long left = 0;
  auto s = r.get(i, 5);
  std::from_chars(s.data(), s.data() + s.size(), left);
  m.lease_left = std::chrono::milliseconds(left);
  m.config = std::string(r.get(i, 6));
  return m;
}

}  // namespace

table_name member_table(const table_name& statistics) {
  return statistics.beside(member_table_name);
}

asio::awaitable<outcome<bool>> async_create_member_table(connection& conn,
                                                         const table_name& statistics,
                                                         deadline until) {
  const table_name t = member_table(statistics);
  auto exists = co_await async_table_exists(conn, t, until);
  if (!exists) co_return exists.error();
  if (*exists) co_return false;
  // A few rows per cluster, each updated every few seconds: HOT updates
  // (no indexed column changes) keep it small without vacuum's help.
  auto made = co_await conn.async_exec("CREATE TABLE " + t.quoted() +
                                           " (cluster text NOT NULL,"
                                           " member text NOT NULL,"
                                           " instance text NOT NULL,"
                                           " joined_at timestamp with time zone NOT NULL,"
                                           " heartbeat_at timestamp with time zone NOT NULL,"
                                           " lease_until timestamp with time zone NOT NULL,"
                                           " view text NOT NULL DEFAULT '',"
                                           " endpoints integer NOT NULL DEFAULT 0,"
                                           " config text NOT NULL DEFAULT '',"
                                           " PRIMARY KEY (cluster, member)) WITH (fillfactor = 50)",
                                       until);
  if (!made) co_return made.error();
  co_return true;
}

asio::awaitable<outcome<heartbeat_result>> async_heartbeat(connection& conn,
                                                           const table_name& members,
                                                           const heartbeat& beat, deadline until) {
  const std::string t = members.quoted();
  // The lease is taken when the row is new, ours (same instance), or
  // lapsed; a live lease of another process under this name is left alone.
  // joined_at is reset when the lease is new or had lapsed: a join, which
  // the others are told of (pg_notify is sent at commit). The members read
  // are the others' rows as they were (a WITH query sees the table before
  // the INSERT), and ours from RETURNING.
  const std::string sql =
      "WITH beat AS (INSERT INTO " + t +
      " AS m (cluster, member, instance, joined_at, heartbeat_at, lease_until, view, endpoints,"
      " config)"
      " VALUES ($1, $2, $3, now(), now(), now() + $4::bigint * interval '1 millisecond', $5,"
      " $6::int, $7)"
      " ON CONFLICT (cluster, member) DO UPDATE SET"
      "  joined_at = CASE WHEN m.instance = EXCLUDED.instance AND m.lease_until > now()"
      "              THEN m.joined_at ELSE now() END,"
      "  instance = EXCLUDED.instance, heartbeat_at = now(), lease_until = EXCLUDED.lease_until,"
      "  view = EXCLUDED.view, endpoints = EXCLUDED.endpoints, config = EXCLUDED.config"
      " WHERE m.instance = EXCLUDED.instance OR m.lease_until <= now()"
      " RETURNING m.*),"
      " told AS (SELECT pg_notify('" +
      std::string(cluster_channel) +
      "', $1) FROM beat WHERE beat.joined_at = now())"
      " SELECT " +
      std::string(row_columns) +
      ", true, (SELECT count(*) FROM told), extract(epoch FROM now())::float8, ''"
      " FROM beat m"
      " UNION ALL SELECT " +
      std::string(row_columns) + ", false, 0, extract(epoch FROM now())::float8, m.instance FROM " +
      t +
      " m WHERE m.cluster = $1 AND m.member <> $2 AND m.lease_until > now()"
      " UNION ALL SELECT '', '', 0, 0, 0, 0, '', false, 0, extract(epoch FROM now())::float8,"
      "  m.instance FROM " +
      t +
      " m WHERE m.cluster = $1 AND m.member = $2 AND NOT EXISTS (SELECT 1 FROM beat)"
      " ORDER BY 1";
  const std::array<std::string, 7> params{beat.cluster,  beat.member,
                                          beat.instance, std::to_string(beat.lease.count()),
                                          beat.view,     std::to_string(beat.endpoints),
                                          beat.config};
  auto r = co_await conn.async_query(sql, params, until);
  if (!r) co_return r.error();
  heartbeat_result out;
  for (int i = 0; i < r->rows(); ++i) {
    out.now = to_double(r->get(i, 9));
    if (r->get(i, 0).empty()) {  // the row of another process holding our name
      out.holder = std::string(r->get(i, 10));
      continue;
    }
    member_row m = read_row(*r, i);
    m.self = r->get(i, 7) == "t";
    if (m.self) {
      out.renewed = true;
      out.joined = r->get(i, 8) != "0";
    }
    out.live.push_back(std::move(m));
  }
  co_return out;
}

asio::awaitable<outcome<bool>> async_leave(connection& conn, const table_name& members,
                                           std::string_view cluster, std::string_view member,
                                           std::string_view instance, deadline until) {
  const std::array<std::string, 3> params{std::string(cluster), std::string(member),
                                          std::string(instance)};
  auto r = co_await conn.async_query(
      "WITH gone AS (DELETE FROM " + members.quoted() +
          " WHERE cluster = $1 AND member = $2 AND instance = $3 RETURNING 1)"
          " SELECT pg_notify('" +
          std::string(cluster_channel) + "', $1) FROM gone",
      params, until);
  if (!r) co_return r.error();
  co_return r->rows() > 0;
}

asio::awaitable<outcome<std::vector<member_row>>> async_live_members(connection& conn,
                                                                     const table_name& members,
                                                                     std::string_view cluster,
                                                                     deadline until) {
  const std::array<std::string, 1> params{std::string(cluster)};
  auto r =
      co_await conn.async_query("SELECT " + std::string(row_columns) + " FROM " + members.quoted() +
                                    " m WHERE m.cluster = $1 AND m.lease_until > now()"
                                    " ORDER BY m.member",
                                params, until);
  if (!r) co_return r.error();
  std::vector<member_row> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(read_row(*r, i));
  co_return out;
}

}  // namespace gatherstats::pg
