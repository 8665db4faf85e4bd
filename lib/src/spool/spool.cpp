#include "gatherstats/spool/spool.hpp"

#include "gatherstats/spool/record_codec.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

namespace gatherstats::spool {
namespace {

constexpr std::string_view entry_suffix = ".rec";
constexpr std::string_view temp_suffix = ".tmp";
constexpr const char* corrupt_dir = "corrupt";

// Running out of space (or quota, or descriptors) may pass; a read-only or
// forbidden directory will not until an operator acts.
failure errno_failure(const std::string& what, int error) {
  std::string message = what + ": " + std::strerror(error);
  switch (error) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
    case EAGAIN:
    case EINTR:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
      return failure::transient(std::move(message));
    default:
      return failure::permanent(std::move(message));
  }
}

std::string quoted(const std::string& path) { return "\"" + path + "\""; }

struct parsed_name {
  entry_id id = 0;
  timestamp fetched_at;
};

// <digits>-<signed digits>.rec, nothing else.
std::optional<parsed_name> parse_name(std::string_view name) {
  if (name.size() <= entry_suffix.size() || !name.ends_with(entry_suffix)) return std::nullopt;
  name.remove_suffix(entry_suffix.size());
  auto dash = name.find('-');
  if (dash == 0 || dash == std::string_view::npos) return std::nullopt;
  parsed_name out;
  const char* end = name.data() + dash;
  auto [p1, e1] = std::from_chars(name.data(), end, out.id);
  if (e1 != std::errc() || p1 != end) return std::nullopt;
  std::int64_t micros = 0;
  const char* last = name.data() + name.size();
  auto [p2, e2] = std::from_chars(end + 1, last, micros);
  if (e2 != std::errc() || p2 != last) return std::nullopt;
  out.fetched_at = timestamp(std::chrono::microseconds(micros));
  return out;
}

outcome<void> write_all(int fd, std::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_failure("cannot write spool file " + quoted(path), errno);
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

outcome<std::string> read_all(int fd, const std::string& path) {
  std::string data;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) data.reserve(static_cast<std::size_t>(st.st_size));
  char buffer[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_failure("cannot read spool file " + quoted(path), errno);
    }
    if (n == 0) return data;
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

// The entry's file name inside the spool directory.
std::string name_of(const entry_info& entry) {
  return entry.path.substr(entry.path.rfind('/') + 1);
}

}  // namespace

directory_spool::directory_spool(std::string path, int dir_fd, std::uint64_t max_bytes,
                                 full_policy policy)
    : path_(std::move(path)), dir_fd_(dir_fd), max_bytes_(max_bytes), policy_(policy) {}

directory_spool::directory_spool(directory_spool&& other) noexcept
    : path_(std::move(other.path_)),
      dir_fd_(std::exchange(other.dir_fd_, -1)),
      max_bytes_(other.max_bytes_),
      policy_(other.policy_),
      index_(std::move(other.index_)),
      bytes_(std::exchange(other.bytes_, 0)),
      next_id_(other.next_id_) {}

directory_spool& directory_spool::operator=(directory_spool&& other) noexcept {
  if (this != &other) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    path_ = std::move(other.path_);
    dir_fd_ = std::exchange(other.dir_fd_, -1);
    max_bytes_ = other.max_bytes_;
    policy_ = other.policy_;
    index_ = std::move(other.index_);
    bytes_ = std::exchange(other.bytes_, 0);
    next_id_ = other.next_id_;
  }
  return *this;
}

directory_spool::~directory_spool() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

outcome<directory_spool> directory_spool::open(std::string path, std::uint64_t max_bytes,
                                               full_policy policy) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    return errno_failure("cannot create spool directory " + quoted(path), errno);
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_failure("cannot open spool directory " + quoted(path), errno);
  directory_spool spool(std::move(path), fd, max_bytes, policy);
  if (auto scanned = spool.scan(); !scanned) return scanned.error();
  return spool;
}

std::string directory_spool::file_name(entry_id id, timestamp fetched_at) const {
  char name[64];
  std::snprintf(name, sizeof name, "%012" PRIu64 "-%" PRId64 ".rec", static_cast<std::uint64_t>(id),
                static_cast<std::int64_t>(fetched_at.time_since_epoch().count()));
  return name;
}

outcome<void> directory_spool::scan() {
  // Sequence numbers must not be reused while a file of that number sits in
  // corrupt/, or moving the next bad file aside would replace it.
  entry_id highest = 0;
  if (DIR* corrupt = ::opendir((path_ + "/" + corrupt_dir).c_str())) {
    while (dirent* e = ::readdir(corrupt))
      if (auto parsed = parse_name(e->d_name)) highest = std::max(highest, parsed->id);
    ::closedir(corrupt);
  }

  int fd = ::dup(dir_fd_);
  if (fd < 0) return errno_failure("cannot read spool directory " + quoted(path_), errno);
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    int error = errno;
    ::close(fd);
    return errno_failure("cannot read spool directory " + quoted(path_), error);
  }
  ::rewinddir(dir);
  bool removed_temp = false;
  std::optional<failure> problem;
  errno = 0;
  while (dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::fstatat(dir_fd_, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    if (name.ends_with(temp_suffix)) {
      // A store that never reached its rename: the record was never
      // reported stored, so nothing is lost by removing it.
      if (::unlinkat(dir_fd_, e->d_name, 0) != 0) {
        problem = errno_failure(
            "cannot remove temporary spool file " + quoted(path_ + "/" + std::string(name)), errno);
        break;
      }
      removed_temp = true;
      continue;
    }
    auto parsed = parse_name(name);
    if (!parsed) continue;
    entry_info info{parsed->id, parsed->fetched_at, static_cast<std::uint64_t>(st.st_size),
                    path_ + "/" + std::string(name)};
    bytes_ += info.bytes;
    highest = std::max(highest, parsed->id);
    index_.emplace(parsed->id, std::move(info));
  }
  ::closedir(dir);
  if (problem) return *problem;
  next_id_ = highest + 1;
  if (removed_temp && ::fsync(dir_fd_) != 0)
    return errno_failure("cannot sync spool directory " + quoted(path_), errno);
  return {};
}

outcome<store_result> directory_spool::store(const fetch_record& record, entry_id in_use_upto,
                                             const std::set<entry_id>* also_in_use) {
  auto encoded = encode_record(record);
  if (!encoded) return encoded.error();
  const std::string& bytes = *encoded;
  const std::uint64_t size = bytes.size();
  if (size > max_bytes_)
    return failure::permanent("cannot spool a fetch of " + quoted(record.name) + ": its " +
                              std::to_string(size) + " bytes exceed the spool's max_bytes (" +
                              std::to_string(max_bytes_) + ") in " + quoted(path_));
  if (policy_ == full_policy::stop && bytes_ + size > max_bytes_)
    return failure::transient("spool " + quoted(path_) + " is full (" + std::to_string(bytes_) +
                              " of " + std::to_string(max_bytes_) +
                              " bytes): refusing a fetch of " + quoted(record.name));

  const entry_id id = next_id_++;
  const std::string name = file_name(id, record.fetched_at);
  const std::string temp = name + std::string(temp_suffix);
  const std::string temp_path = path_ + "/" + temp;
  auto discard_temp = [&] { ::unlinkat(dir_fd_, temp.c_str(), 0); };

  int fd = ::openat(dir_fd_, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno_failure("cannot create spool file " + quoted(temp_path), errno);
  auto written = write_all(fd, bytes, temp_path);
  if (written && ::fsync(fd) != 0)
    written = errno_failure("cannot sync spool file " + quoted(temp_path), errno);
  // close() can report a deferred write error (NFS): it counts.
  if (::close(fd) != 0 && written)
    written = errno_failure("cannot close spool file " + quoted(temp_path), errno);
  if (!written) {
    discard_temp();
    return written.error();
  }

  const std::string final_path = path_ + "/" + name;
  if (::renameat(dir_fd_, temp.c_str(), dir_fd_, name.c_str()) != 0) {
    auto f = errno_failure("cannot rename spool file into place " + quoted(final_path), errno);
    discard_temp();
    return f;
  }
  if (::fsync(dir_fd_) != 0) {
    // Without the directory sync the rename may not survive a crash: undo
    // it so the caller keeps the record and nothing is half-promised.
    auto f = errno_failure("cannot sync spool directory " + quoted(path_), errno);
    ::unlinkat(dir_fd_, name.c_str(), 0);
    return f;
  }

  store_result result;
  result.id = id;
  // Drop only after the new record is safe, so a failed store never costs
  // an old one. An entry that cannot be deleted stays (and stays counted):
  // the spool is then over its bound until a later store drops more.
  for (auto it = index_.upper_bound(in_use_upto);
       it != index_.end() && bytes_ + size > max_bytes_;) {
    if (also_in_use && also_in_use->contains(it->first)) {
      ++it;
      continue;
    }
    if (::unlinkat(dir_fd_, name_of(it->second).c_str(), 0) != 0 && errno != ENOENT) break;
    bytes_ -= it->second.bytes;
    result.dropped.push_back(std::move(it->second));
    it = index_.erase(it);
  }
  // A lost drop after a crash only brings an old record back to be
  // committed (idempotently): the sync failing here is not worth a failure.
  if (!result.dropped.empty()) ::fsync(dir_fd_);

  bytes_ += size;
  index_.emplace(id, entry_info{id, record.fetched_at, size, final_path});
  return result;
}

failure directory_spool::move_aside(const entry_info& entry, const failure& why) {
  // Out of the index whatever happens next, so one bad file never hides the
  // entries behind it.
  bytes_ -= entry.bytes;
  const entry_id id = entry.id;
  const std::string name = name_of(entry);
  const std::string target = std::string(corrupt_dir) + "/" + name;
  const std::string target_path = path_ + "/" + target;
  std::string message = "spool file " + quoted(entry.path) + ": " + why.message;
  auto give_up = [&](const char* step, int error) {
    return failure::permanent(message + "; cannot " + step + " " + quoted(target_path) + " (" +
                              std::strerror(error) + "), left in place until the next start");
  };
  if (::mkdirat(dir_fd_, corrupt_dir, 0700) != 0 && errno != EEXIST) {
    int error = errno;
    index_.erase(id);
    return give_up("create", error);
  }
  if (::renameat(dir_fd_, name.c_str(), dir_fd_, target.c_str()) != 0) {
    int error = errno;
    index_.erase(id);
    return give_up("move it to", error);
  }
  index_.erase(id);
  // Both directories changed; sync them so the move is not undone by a crash.
  if (int sub = ::openat(dir_fd_, corrupt_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC); sub >= 0) {
    ::fsync(sub);
    ::close(sub);
  }
  ::fsync(dir_fd_);
  return failure::permanent(message + "; moved to " + quoted(target_path));
}

outcome<fetch_record> directory_spool::load(entry_id id) {
  auto it = index_.find(id);
  if (it == index_.end())
    return failure::permanent("no spool entry " + std::to_string(id) + " in " + quoted(path_));
  const entry_info& entry = it->second;
  int fd = ::openat(dir_fd_, name_of(entry).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int error = errno;
    auto f = errno_failure("cannot open spool file " + quoted(entry.path), error);
    if (error == ENOENT) {
      // Deleted behind our back: nothing left to read or move.
      bytes_ -= entry.bytes;
      index_.erase(it);
    }
    return f;
  }
  auto data = read_all(fd, entry.path);
  ::close(fd);
  if (!data) return data.error();
  auto record = decode_record(*data);
  if (!record) return move_aside(entry, record.error());
  if (record->fetched_at != entry.fetched_at)
    return move_aside(entry, failure::permanent("its fetched_at does not match its file name"));
  return record;
}

outcome<std::optional<spooled_record>> directory_spool::oldest() {
  if (index_.empty()) return std::optional<spooled_record>();
  entry_id id = index_.begin()->first;
  auto record = load(id);
  if (!record) return record.error();
  return std::optional<spooled_record>(spooled_record{id, std::move(*record)});
}

outcome<void> directory_spool::remove(entry_id id) {
  auto it = index_.find(id);
  if (it == index_.end()) return {};
  if (::unlinkat(dir_fd_, name_of(it->second).c_str(), 0) != 0 && errno != ENOENT)
    return errno_failure("cannot remove spool file " + quoted(it->second.path), errno);
  bytes_ -= it->second.bytes;
  index_.erase(it);
  // Without this a crash could bring the file back and the record would be
  // committed again (harmless, commits are idempotent, but wasteful).
  if (::fsync(dir_fd_) != 0)
    return errno_failure("cannot sync spool directory " + quoted(path_), errno);
  return {};
}

std::optional<entry_info> directory_spool::next_after(entry_id id) const {
  auto it = index_.upper_bound(id);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::vector<entry_info> directory_spool::entries() const {
  std::vector<entry_info> out;
  out.reserve(index_.size());
  for (const auto& [id, entry] : index_) out.push_back(entry);
  return out;
}

}  // namespace gatherstats::spool
