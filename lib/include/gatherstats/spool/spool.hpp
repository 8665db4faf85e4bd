// The spool: fetch records kept on disk, one file per record, until the
// database has them. Used when a commit cannot happen (the database is down,
// the in-memory queue is full, the daemon is shutting down) and replayed
// oldest first when the database returns or the daemon starts.
//
// Files are named <sequence>-<fetched_at>.rec (a 12-digit zero-padded
// sequence number that only grows, then fetched_at in microseconds since the
// Unix epoch) and hold record_codec's encoding. A store writes a temporary
// file (<name>.tmp), fsyncs it, renames it into place and fsyncs the
// directory, so after a crash a record is either whole under its final name
// or a temporary file, which open() removes. See docs/spool.md.
//
// Bounds: `max_bytes` caps the sum of the entry files' sizes. When a store
// would pass it, `full_policy::drop_oldest` removes the oldest entries and
// returns them (the caller logs each as an error); `full_policy::stop`
// refuses the new record with a transient failure. A record larger than
// `max_bytes` on its own is refused under either policy.
//
// Errors: every failure (full disk, read-only directory, permission denied)
// is an `outcome` failure naming the path and the errno text; nothing here
// throws except std::bad_alloc. A file that cannot be decoded (truncated,
// corrupt) is moved into the `corrupt/` subdirectory, dropped from the index
// and reported as a failure naming both paths; the next entry stays
// reachable. Files the spool does not recognise are left alone.
//
// Threading: blocking file I/O with fsync. Call it off the event loop (e.g.
// io::async_run_blocking) and from one thread at a time; it has no locks.
// Only one directory_spool may use a directory at a time.
#pragma once

#include "gatherstats/error.hpp"
#include "gatherstats/fetch_record.hpp"

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace gatherstats::spool {

enum class full_policy { drop_oldest, stop };

// The sequence number in the file name: larger is newer.
using entry_id = std::uint64_t;

// What the spool knows about an entry without reading it.
struct entry_info {
  entry_id id = 0;
  timestamp fetched_at;     // from the file name
  std::uint64_t bytes = 0;  // the file's size
  std::string path;
};

struct store_result {
  entry_id id = 0;
  // Entries removed to make room under full_policy::drop_oldest, oldest
  // first. Each one is a fetch that will never be committed.
  std::vector<entry_info> dropped;
};

struct spooled_record {
  entry_id id = 0;
  fetch_record record;
};

class directory_spool {
 public:
  // Creates `path` (mode 0700; its parent must exist), removes temporary
  // files left by a crash and indexes the entries already there.
  static outcome<directory_spool> open(std::string path, std::uint64_t max_bytes,
                                       full_policy policy = full_policy::drop_oldest);

  directory_spool(directory_spool&& other) noexcept;
  directory_spool& operator=(directory_spool&& other) noexcept;
  directory_spool(const directory_spool&) = delete;
  directory_spool& operator=(const directory_spool&) = delete;
  ~directory_spool();

  // Durably stores `record`; when this returns a value the record survives a
  // crash or power loss. On failure nothing was stored and nothing dropped.
  // Entries up to `in_use_upto`, and those in `also_in_use`, are being
  // committed from memory: drop_oldest passes over them (the spool may then
  // stay over its bound until they are removed).
  outcome<store_result> store(const fetch_record& record, entry_id in_use_upto = 0,
                              const std::set<entry_id>* also_in_use = nullptr);

  // The oldest entry, or nullopt when the spool is empty. A failure means the
  // oldest file could not be read; if it was corrupt it has been moved aside,
  // so calling again gives the next one.
  outcome<std::optional<spooled_record>> oldest();

  // Reads one entry back; corrupt files are handled as for oldest().
  outcome<fetch_record> load(entry_id id);

  // Deletes an entry once its commit succeeded; durable when it returns.
  // Removing an id that is not there is not an error (a replay may race a
  // drop).
  outcome<void> remove(entry_id id);

  // The oldest entry after `id` (without reading it), or nullopt.
  std::optional<entry_info> next_after(entry_id id) const;

  // The entries, oldest first.
  std::vector<entry_info> entries() const;
  std::size_t size() const { return index_.size(); }
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t max_bytes() const { return max_bytes_; }
  full_policy policy() const { return policy_; }
  const std::string& path() const { return path_; }

 private:
  directory_spool(std::string path, int dir_fd, std::uint64_t max_bytes, full_policy policy);
  outcome<void> scan();
  failure move_aside(const entry_info& entry, const failure& why);
  std::string file_name(entry_id id, timestamp fetched_at) const;

  std::string path_;
  int dir_fd_ = -1;
  std::uint64_t max_bytes_ = 0;
  full_policy policy_ = full_policy::drop_oldest;
  std::map<entry_id, entry_info> index_;
  std::uint64_t bytes_ = 0;
  entry_id next_id_ = 1;
};

}  // namespace gatherstats::spool
