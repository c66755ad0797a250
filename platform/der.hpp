#pragma once

// A minimal DER writer and reader: enough to build the CSR of protocol.md §4 byte for byte,
// to check every rule of it on the simulator side, and to forge broken variants in tests.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "platform/result.hpp"

namespace msiv2::platform::der {

/// Universal and context tags used by this project.
enum tag : std::uint8_t {
  boolean = 0x01,
  integer = 0x02,
  bit_string = 0x03,
  octet_string = 0x04,
  null = 0x05,
  object_identifier = 0x06,
  utf8_string = 0x0c,
  printable_string = 0x13,
  ia5_string = 0x16,
  utc_time = 0x17,
  generalized_time = 0x18,
  sequence = 0x30,
  set = 0x31,
  context_0 = 0xa0, // [0] constructed
  context_1 = 0xa1,
  context_2 = 0xa2,
  context_3 = 0xa3,
};

/// One TLV: tag, definite length (short or long form), content.
std::string tlv(std::uint8_t tag, std::string_view content);
/// SEQUENCE of the concatenated parts.
std::string seq(std::initializer_list<std::string_view> parts);
/// SET of the concatenated parts (in the given order; the caller sorts when needed).
std::string set_of(std::initializer_list<std::string_view> parts);
/// OBJECT IDENTIFIER TLV from dotted text ("1.2.840.113549.1.1.10"); aborts on bad text
/// (OIDs are compile-time constants of this project).
std::string oid(std::string_view dotted);
/// NULL TLV.
std::string null_value();
/// INTEGER TLV from a non-negative small value.
std::string small_integer(std::uint64_t v);
/// BIT STRING TLV with zero unused bits.
std::string bit_string_of(std::string_view bytes);

/// A parsed TLV; views point into the reader's input.
struct node {
  std::uint8_t tag = 0;
  std::string_view content; ///< the value bytes
  std::string_view whole;   ///< tag + length + value
};

/// Reads consecutive TLVs from a buffer. Only definite, minimal lengths are accepted (DER).
class reader {
public:
  explicit reader(std::string_view in) : in_(in) {}

  /// True when every byte was consumed.
  bool done() const noexcept { return in_.empty(); }
  /// Next TLV, or an error naming the problem (truncated, indefinite length, ...).
  result<node> next();
  /// Next TLV, which must carry `expected` tag; `what` names it in the error.
  result<node> expect(std::uint8_t expected, std::string_view what);

private:
  std::string_view in_;
};

/// Dotted text of an OBJECT IDENTIFIER's content bytes.
result<std::string> decode_oid(std::string_view content);

} // namespace msiv2::platform::der
