// Turns the library's events into log records: one readable line per event
// on stderr, or, under systemd, one journald entry per event with a
// priority, a MESSAGE_ID per kind of event and structured fields.
//
// Journal fields (only those that apply to the event):
//   MESSAGE                   the same text as the stderr line
//   PRIORITY                  7 debug, 6 info, 5 notice, 4 warning, 3 error
//   MESSAGE_ID                fixed per kind of event (below)
//   GATHERSTATS_EVENT         the kind, e.g. fetch_committed
//   GATHERSTATS_ENDPOINT      the endpoint's name
//   GATHERSTATS_URL           the endpoint's URL, credentials redacted
//   GATHERSTATS_ROWS          rows stored by a committed fetch
//   GATHERSTATS_DURATION_MS   how long the fetch (or commit) took
//   GATHERSTATS_HTTP_STATUS   the HTTP status of a failed fetch
//   GATHERSTATS_ERROR         the error, one line
//
// MESSAGE_IDs (`journalctl MESSAGE_ID=...`); never change one once released:
//   fetch committed         599cb43527f348bb9f596019c868becc
//   fetch failed            3a44015876654f82abe4cf0be7775503
//   fetch retrying          06f3d014320e42abadfedfab68af4248
//   tick skipped            f90b15f47efd4be8a8b9be71e8cd72f0
//   commit failed           18f8e089fad14f2aa156b47b658165d1
//   database lost           09fd041619c84798a5d8b2d0870eb376
//   database back           2ffacb91002f4823a5f9dfc9862f1661
//   configuration loaded    98f7358764224a199038b868ac532c12  (at start and after a reload)
//   configuration rejected  8665fe3e5ff943ddac3d1de8719b1565
//   warning                 ccd200219c684a7482ece36e48fcf31d
//   stopping                057c92539d9447eba28cbf5a4e96eb77
//   results spooled         16c1cc46228042d788700b66df2c1e69
//   results dropped         83d7cc8156bb4ef691b68dc1bd2f22ca
//
// Secrets: events carry redacted URLs already; as a second line of defence
// every text is passed through redact_secrets() before it is written, so a
// password inside a conninfo or a URL never reaches a log.
//
// Sinks are called on the event loop's thread; each record is written with
// one system call, so records never interleave.
#pragma once

#include "command_line.hpp"

#include "gatherstats/log/event.hpp"

#include <string>
#include <string_view>

namespace gatherstatsd {

// "error: fetch failed endpoint=iar duration_ms=10001: https://...: timed out"
std::string format_event(const gatherstats::log::event& e);

// `text` with the values of password=/passwd= conninfo keywords and query
// parameters, and the password of any scheme://user:password@ URL, replaced
// by "***", and the value of every secret-looking query parameter of a URL
// in it by "REDACTED" (gatherstats/http/redact.hpp).
std::string redact_secrets(std::string_view text);

// The fixed MESSAGE_ID of a kind of event (32 hex digits).
const char* message_id(gatherstats::log::event_kind kind);

// A sink that writes format_event() lines to stderr, each with one write().
gatherstats::log::event_sink stderr_sink(gatherstats::log::severity min_level);

// A sink that sends each event to journald with the fields above; an event
// the journal does not take is written to stderr instead.
gatherstats::log::event_sink journal_sink(gatherstats::log::severity min_level);

// Whether stderr is connected to the journal: JOURNAL_STREAM names its
// device and inode.
bool stderr_is_journal();

// The sink `target` asks for (automatic: the journal if stderr_is_journal()).
gatherstats::log::event_sink make_sink(log_target target, gatherstats::log::severity min_level);

}  // namespace gatherstatsd
