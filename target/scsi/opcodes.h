// Opcodes: the table of commands this device server implements, with what
// REPORT SUPPORTED OPERATION CODES says about them (CDB usage data, timeouts)
// and what the reservation and task-set rules need (access class, whether a
// command runs alone in its task set).
//
// Promise: a constant table; Lookup() is a pure function.
#pragma once

#include <cstdint>
#include <vector>

#include "target/scsi/persistent_reservations.h"

namespace ferry::scsi {

struct OpcodeInfo {
  uint8_t opcode;
  int16_t service_action;     // -1: the opcode has no service actions
  uint8_t cdb_len;
  uint8_t usage[16];          // CDB usage data (byte 0 = opcode)
  Access access;              // persistent reservation conflict class
  bool exclusive;             // runs with no other command of the LU in flight
  uint32_t nominal_timeout_s; // for the command timeouts descriptor
};

// The whole table, in opcode order.
const std::vector<OpcodeInfo>& AllOpcodes();
// nullptr when the opcode (and service action, if the opcode has them) is unknown.
const OpcodeInfo* LookupOpcode(uint8_t opcode, uint8_t service_action);
// True when `opcode` is known and has service actions.
bool OpcodeHasServiceActions(uint8_t opcode);

}  // namespace ferry::scsi
