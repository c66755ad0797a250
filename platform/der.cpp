#include "platform/der.hpp"

#include <cstdio>
#include <cstdlib>
#include <limits>

namespace msiv2::platform::der {

namespace {

std::string concat(std::initializer_list<std::string_view> parts) {
  std::size_t n = 0;
  for (auto p : parts)
    n += p.size();
  std::string out;
  out.reserve(n);
  for (auto p : parts)
    out.append(p);
  return out;
}

std::string tag_text(std::uint8_t t) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02x", unsigned(t));
  return buf;
}

void append_base128(std::string& out, std::uint64_t v) {
  char tmp[10];
  int n = 0;
  do {
    tmp[n++] = char(v & 0x7f);
    v >>= 7;
  } while (v != 0);
  while (n > 1)
    out += char(tmp[--n] | 0x80);
  out += tmp[0];
}

[[noreturn]] void bad_oid(std::string_view dotted) {
  std::fprintf(stderr, "fatal: malformed OID constant '%.*s'\n", int(dotted.size()),
               dotted.data());
  std::abort();
}

} // namespace

std::string tlv(std::uint8_t tag, std::string_view content) {
  std::string out;
  out.reserve(content.size() + 6);
  out += char(tag);
  auto len = content.size();
  if (len < 0x80) {
    out += char(len);
  } else {
    char tmp[8];
    int n = 0;
    while (len != 0) {
      tmp[n++] = char(len & 0xff);
      len >>= 8;
    }
    out += char(0x80 | n);
    while (n > 0)
      out += tmp[--n];
  }
  out.append(content);
  return out;
}

std::string seq(std::initializer_list<std::string_view> parts) {
  return tlv(sequence, concat(parts));
}

std::string set_of(std::initializer_list<std::string_view> parts) {
  return tlv(set, concat(parts));
}

std::string oid(std::string_view dotted) {
  std::vector<std::uint64_t> arcs;
  std::size_t i = 0;
  while (i <= dotted.size()) {
    auto dot = dotted.find('.', i);
    if (dot == std::string_view::npos)
      dot = dotted.size();
    auto part = dotted.substr(i, dot - i);
    if (part.empty() || part.size() > 18 || (part.size() > 1 && part[0] == '0'))
      bad_oid(dotted);
    std::uint64_t v = 0;
    for (char c : part) {
      if (c < '0' || c > '9')
        bad_oid(dotted);
      v = v * 10 + std::uint64_t(c - '0');
    }
    arcs.push_back(v);
    i = dot + 1;
  }
  if (arcs.size() < 2 || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] >= 40))
    bad_oid(dotted);
  std::string content;
  append_base128(content, arcs[0] * 40 + arcs[1]);
  for (std::size_t k = 2; k < arcs.size(); ++k)
    append_base128(content, arcs[k]);
  return tlv(object_identifier, content);
}

std::string null_value() {
  return std::string("\x05\x00", 2);
}

std::string small_integer(std::uint64_t v) {
  std::string content;
  do {
    content.insert(content.begin(), char(v & 0xff));
    v >>= 8;
  } while (v != 0);
  // A set high bit would read as negative: prefix a zero byte.
  if (std::uint8_t(content[0]) & 0x80)
    content.insert(content.begin(), '\0');
  return tlv(integer, content);
}

std::string bit_string_of(std::string_view bytes) {
  std::string content(1, '\0');
  content.append(bytes);
  return tlv(bit_string, content);
}

result<node> reader::next() {
  if (in_.empty())
    return fail("DER is truncated: expected a TLV, found end of input");
  if (in_.size() < 2)
    return fail("DER is truncated: TLV with tag " + tag_text(std::uint8_t(in_[0]))
                + " has no length");
  auto t = std::uint8_t(in_[0]);
  if ((t & 0x1f) == 0x1f)
    return fail("DER tag " + tag_text(t) + " uses the multi-byte form, which is not supported");
  auto first = std::uint8_t(in_[1]);
  std::size_t header = 2;
  std::size_t len = 0;
  if (first < 0x80) {
    len = first;
  } else if (first == 0x80) {
    return fail("DER TLV with tag " + tag_text(t) + " has an indefinite length (BER, not DER)");
  } else {
    std::size_t n = first & 0x7f;
    if (n > 4)
      return fail("DER TLV with tag " + tag_text(t) + " has a length of more than 4 bytes");
    if (in_.size() < 2 + n)
      return fail("DER is truncated: length of TLV with tag " + tag_text(t) + " is cut off");
    if (in_[2] == 0)
      return fail("DER TLV with tag " + tag_text(t) + " has a non-minimal length (leading zero)");
    for (std::size_t k = 0; k < n; ++k)
      len = (len << 8) | std::uint8_t(in_[2 + k]);
    if (len < 0x80)
      return fail("DER TLV with tag " + tag_text(t)
                  + " uses the long length form for a short length");
    header += n;
  }
  if (in_.size() - header < len)
    return fail("DER is truncated: TLV with tag " + tag_text(t) + " declares "
                + std::to_string(len) + " bytes, only " + std::to_string(in_.size() - header)
                + " remain");
  node out;
  out.tag = t;
  out.content = in_.substr(header, len);
  out.whole = in_.substr(0, header + len);
  in_.remove_prefix(header + len);
  return out;
}

result<node> reader::expect(std::uint8_t expected, std::string_view what) {
  if (in_.empty())
    return fail(std::string(what) + " is missing (truncated input)");
  auto n = next();
  if (!n)
    return fail(std::string(what) + ": " + n.error());
  if (n->tag != expected)
    return fail(std::string(what) + " must have tag " + tag_text(expected) + ", found "
                + tag_text(n->tag));
  return n;
}

result<std::string> decode_oid(std::string_view content) {
  if (content.empty())
    return fail("OBJECT IDENTIFIER is empty");
  if (std::uint8_t(content.back()) & 0x80)
    return fail("OBJECT IDENTIFIER ends inside an arc");
  std::string out;
  std::uint64_t v = 0;
  bool first = true;
  bool arc_start = true;
  for (char ch : content) {
    auto c = std::uint8_t(ch);
    if (arc_start && c == 0x80)
      return fail("OBJECT IDENTIFIER arc has a non-minimal encoding");
    arc_start = false;
    if (v > (std::numeric_limits<std::uint64_t>::max() >> 7))
      return fail("OBJECT IDENTIFIER arc is too large");
    v = (v << 7) | (c & 0x7f);
    if (c & 0x80)
      continue;
    if (first) {
      std::uint64_t a = v < 40 ? 0 : v < 80 ? 1 : 2;
      out = std::to_string(a) + "." + std::to_string(v - a * 40);
      first = false;
    } else {
      out += "." + std::to_string(v);
    }
    v = 0;
    arc_start = true;
  }
  return out;
}

} // namespace msiv2::platform::der
