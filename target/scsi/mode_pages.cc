#include "target/scsi/mode_pages.h"

namespace ferry::scsi {

ModePages::ModePages() {
  // Read-write error recovery: nothing changeable.
  def_rw_ = {0x01, 0x0a, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // AWRE
  mask_rw_.assign(def_rw_.size(), 0);
  // Caching: WCE on by default (the gateway acknowledges before the media
  // is durable; SYNCHRONIZE CACHE and FUA make writes durable).
  def_caching_.assign(20, 0);
  def_caching_[0] = 0x08; def_caching_[1] = 0x12; def_caching_[2] = 0x04;
  mask_caching_.assign(20, 0);
  mask_caching_[2] = 0x04;
  // Control: queue algorithm modifier 1 (unrestricted reordering), QERR 0,
  // TAS 1 (tasks aborted for another nexus end with TASK ABORTED), D_SENSE 0,
  // SWP 0. D_SENSE and SWP changeable.
  def_control_ = {0x0a, 0x0a, 0x00, 0x10, 0x00, 0x40, 0, 0, 0xff, 0xff, 0, 0};
  mask_control_.assign(12, 0);
  mask_control_[2] = 0x04;
  mask_control_[4] = 0x08;
  // Informational exceptions: DEXCPT set (no exceptions are ever reported).
  def_ie_ = {0x1c, 0x0a, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0};
  mask_ie_ = {0, 0, 0x98, 0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  cur_rw_ = def_rw_;
  cur_caching_ = def_caching_;
  cur_control_ = def_control_;
  cur_ie_ = def_ie_;
}

std::vector<ModePages::Page> ModePages::Pages() const {
  auto self = const_cast<ModePages*>(this);
  return {{0x01, &self->cur_rw_, &def_rw_, &mask_rw_},
          {0x08, &self->cur_caching_, &def_caching_, &mask_caching_},
          {0x0a, &self->cur_control_, &def_control_, &mask_control_},
          {0x1c, &self->cur_ie_, &def_ie_, &mask_ie_}};
}

std::optional<Sense> ModePages::Get(uint8_t pc, uint8_t page, uint8_t subpage, uint16_t page_byte,
                                    std::vector<uint8_t>* out) const {
  if (pc == kSaved) return Sense::Make(sk::kIllegalRequest, 0x39, 0x00);  // SAVING PARAMETERS NOT SUPPORTED
  // We only have subpage-0 pages: subpage 0 or 0xFF (all subpages) is fine.
  if (subpage != 0 && subpage != 0xff) return Sense::InvalidFieldInCdb(uint16_t(page_byte + 1));
  bool found = false;
  for (const Page& p : Pages()) {
    if (page != 0x3f && page != p.code) continue;
    found = true;
    const std::vector<uint8_t>& src = pc == kCurrent ? *p.current : pc == kDefault ? *p.deflt : *p.mask;
    size_t at = out->size();
    out->insert(out->end(), src.begin(), src.end());
    (*out)[at] = p.code;  // PS = 0, SPF = 0
    (*out)[at + 1] = uint8_t(src.size() - 2);
  }
  if (!found) return Sense::InvalidFieldInCdb(page_byte, 5);
  return std::nullopt;
}

std::optional<Sense> ModePages::Select(const uint8_t* pages, size_t len, size_t base, bool* changed) {
  *changed = false;
  struct Change { std::vector<uint8_t>* dst; std::vector<uint8_t> value; };
  std::vector<Change> changes;
  size_t off = 0;
  while (off < len) {
    if (len - off < 2) return Sense::ParamListLengthError();
    uint8_t code = pages[off] & 0x3f;
    bool spf = pages[off] & 0x40;
    if (spf) return Sense::InvalidFieldInParam(uint16_t(base + off), 6);
    const Page* page = nullptr;
    auto all = Pages();
    for (const Page& p : all) if (p.code == code) page = &p;
    if (!page) return Sense::InvalidFieldInParam(uint16_t(base + off), 5);
    size_t plen = size_t(pages[off + 1]) + 2;
    if (plen != page->current->size()) return Sense::InvalidFieldInParam(uint16_t(base + off + 1));
    if (off + plen > len) return Sense::ParamListLengthError();
    std::vector<uint8_t> value(pages + off, pages + off + plen);
    value[0] = code;
    for (size_t i = 2; i < plen; ++i) {
      uint8_t diff = uint8_t(value[i] ^ (*page->current)[i]) & uint8_t(~(*page->mask)[i]);
      if (diff) {
        int bit = 7;
        while (bit > 0 && !(diff & (1 << bit))) --bit;
        return Sense::InvalidFieldInParam(uint16_t(base + off + i), int8_t(bit));
      }
    }
    if (code == 0x1c && (value[3] & 0x0f) > 6) return Sense::InvalidFieldInParam(uint16_t(base + off + 3), 3);
    changes.push_back({page->current, std::move(value)});
    off += plen;
  }
  for (Change& c : changes) {
    if (*c.dst != c.value) *changed = true;
    *c.dst = std::move(c.value);
  }
  return std::nullopt;
}

}  // namespace ferry::scsi
