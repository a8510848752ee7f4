// ModePages: the mode pages of one logical unit (SPC-4 7.5, SBC-3 6.4):
// read-write error recovery (0x01, fixed), caching (0x08: WCE changeable),
// control (0x0A: D_SENSE and SWP changeable), informational exceptions
// (0x1C: PERF, EWASC, DEXCPT, MRIE 0..6, interval timer, report count
// changeable). Saving is not supported (PS = 0; PC = saved and SP = 1 are
// refused as SPC-4 says).
//
// Promise: not thread-safe on its own (LogicalUnit serialises MODE SELECT);
// Select() validates the whole parameter list before it changes anything.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "target/scsi/sense.h"

namespace ferry::scsi {

class ModePages {
 public:
  enum Pc : uint8_t { kCurrent = 0, kChangeable = 1, kDefault = 2, kSaved = 3 };

  ModePages();

  // Appends the requested page(s) (0x3F = all; subpage 0xFF = all subpages)
  // to `out`. Returns a sense (INVALID FIELD IN CDB, pointing at byte
  // `page_byte`/`subpage_byte` of the CDB) when the page is not supported.
  std::optional<Sense> Get(uint8_t pc, uint8_t page, uint8_t subpage, uint16_t page_byte,
                           std::vector<uint8_t>* out) const;

  // Applies the pages of a MODE SELECT parameter list (`pages` points just
  // after the header and block descriptors; `base` is its offset in the list,
  // for field pointers). *changed says whether any current value moved.
  std::optional<Sense> Select(const uint8_t* pages, size_t len, size_t base, bool* changed);

  bool wce() const { return cur_caching_[2] & 0x04; }
  bool d_sense() const { return cur_control_[2] & 0x04; }
  bool swp() const { return cur_control_[4] & 0x08; }

 private:
  struct Page {
    uint8_t code;
    std::vector<uint8_t>* current;
    const std::vector<uint8_t>* deflt;
    const std::vector<uint8_t>* mask;
  };
  std::vector<Page> Pages() const;

  std::vector<uint8_t> cur_rw_, def_rw_, mask_rw_;
  std::vector<uint8_t> cur_caching_, def_caching_, mask_caching_;
  std::vector<uint8_t> cur_control_, def_control_, mask_control_;
  std::vector<uint8_t> cur_ie_, def_ie_, mask_ie_;
};

}  // namespace ferry::scsi
