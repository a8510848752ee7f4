#include "target/store/meta.h"

#include <sstream>

#include "target/store/fs_util.h"

namespace ferry::store {

namespace {

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void EncodeMap(std::ostringstream& o, const ChunkMap& m) {
  // Run-length: "map <entries> <runs>" then "count:hexid" per run.
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (uint64_t v : m) {
    if (!runs.empty() && runs.back().second == v) runs.back().first++;
    else runs.emplace_back(1, v);
  }
  o << "map " << m.size() << " " << runs.size();
  for (auto& r : runs) o << " " << r.first << ":" << Hex16(r.second);
  o << "\n";
}

bool DecodeMap(std::istringstream& line, ChunkMap* m) {
  std::string tag;
  uint64_t n = 0, nruns = 0;
  if (!(line >> tag >> n >> nruns) || tag != "map" || n > kMaxChunks || nruns > n) return false;
  m->clear();
  m->reserve(n);
  for (uint64_t i = 0; i < nruns; ++i) {
    std::string run;
    if (!(line >> run)) return false;
    auto colon = run.find(':');
    if (colon == std::string::npos || colon == 0 || colon > 8) return false;
    uint64_t count = 0;
    for (size_t k = 0; k < colon; ++k) {
      if (run[k] < '0' || run[k] > '9') return false;
      count = count * 10 + static_cast<uint64_t>(run[k] - '0');
    }
    uint64_t id = 0;
    if (!ParseHex16(run.substr(colon + 1), &id)) return false;
    if (count == 0 || m->size() + count > n) return false;
    m->insert(m->end(), count, id);
  }
  return m->size() == n;
}

Status Corrupt(const std::string& why) { return Status::IoError("corrupt volume metadata: " + why); }

}  // namespace

const SnapMeta* VolumeMeta::FindSnap(const std::string& n) const {
  for (const auto& s : snaps)
    if (s.name == n) return &s;
  return nullptr;
}

std::string EncodeMeta(const VolumeMeta& m) {
  std::ostringstream o;
  o << "ferry-volume 1\n";
  o << "uuid " << Hex16(m.uuid) << "\n";
  o << "name " << m.name << "\n";
  o << "size " << m.size << "\n";
  o << "chunk_size " << m.chunk_size << "\n";
  o << "created " << m.created << "\n";
  o << "head " << Hex16(m.head) << "\n";
  EncodeMap(o, m.base);
  for (const auto& s : m.snaps) {
    o << "snap " << s.name << " " << s.size << " " << s.created << "\n";
    EncodeMap(o, s.map);
  }
  std::string body = o.str();
  return body + "end " + Hex16(Fnv1a(body)) + "\n";
}

Status DecodeMeta(const std::string& text, VolumeMeta* m) {
  auto endpos = text.rfind("end ");
  if (endpos == std::string::npos || text.size() != endpos + 4 + 16 + 1 || text.back() != '\n')
    return Corrupt("no checksum line");
  std::string body = text.substr(0, endpos);
  uint64_t sum = 0;
  if (!ParseHex16(text.substr(endpos + 4, 16), &sum) || sum != Fnv1a(body)) return Corrupt("checksum mismatch");
  std::istringstream in(body);
  std::string line;
  auto next = [&](const char* key, std::istringstream& ls) -> bool {
    if (!std::getline(in, line)) return false;
    ls.clear();
    ls.str(line);
    std::string k;
    return (ls >> k) && k == key;
  };
  std::istringstream ls;
  VolumeMeta r;
  std::string hex;
  int version = 0;
  if (!next("ferry-volume", ls) || !(ls >> version) || version != 1) return Corrupt("bad header");
  if (!next("uuid", ls) || !(ls >> hex) || !ParseHex16(hex, &r.uuid)) return Corrupt("uuid");
  if (!next("name", ls) || !(ls >> r.name)) return Corrupt("name");
  if (!next("size", ls) || !(ls >> r.size)) return Corrupt("size");
  if (!next("chunk_size", ls) || !(ls >> r.chunk_size) || r.chunk_size == 0 ||
      (r.chunk_size & (r.chunk_size - 1)) != 0)
    return Corrupt("chunk_size");
  if (!next("created", ls) || !(ls >> r.created)) return Corrupt("created");
  if (!next("head", ls) || !(ls >> hex) || !ParseHex16(hex, &r.head)) return Corrupt("head");
  if (!std::getline(in, line)) return Corrupt("map");
  {
    std::istringstream ms(line);
    if (!DecodeMap(ms, &r.base) || r.base.size() != r.nchunks()) return Corrupt("map");
  }
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string k;
    SnapMeta s;
    if (!(ss >> k >> s.name >> s.size >> s.created) || k != "snap") return Corrupt("snap");
    if (!std::getline(in, line)) return Corrupt("snap map");
    std::istringstream ms(line);
    if (!DecodeMap(ms, &s.map) || s.map.size() != (s.size + r.chunk_size - 1) / r.chunk_size)
      return Corrupt("snap map");
    r.snaps.push_back(std::move(s));
  }
  *m = std::move(r);
  return Status::Ok();
}

}  // namespace ferry::store
