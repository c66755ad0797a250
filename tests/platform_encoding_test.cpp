#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <set>
#include <string>

#include "platform/der.hpp"
#include "platform/encoding.hpp"

using namespace msiv2::platform;

namespace {

std::string bytes(std::initializer_list<int> v) {
  std::string out;
  for (int b : v)
    out += char(b);
  return out;
}

// Boost.Test builds a message even when the check passes: never call error() on success.
template <class R>
std::string why(const R& r) {
  return r.ok() ? std::string() : r.error();
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_encoding_test)

BOOST_AUTO_TEST_CASE(base64_encodes_rfc4648_vectors) {
  BOOST_TEST(base64_encode("") == "");
  BOOST_TEST(base64_encode("f") == "Zg==");
  BOOST_TEST(base64_encode("fo") == "Zm8=");
  BOOST_TEST(base64_encode("foo") == "Zm9v");
  BOOST_TEST(base64_encode("foob") == "Zm9vYg==");
  BOOST_TEST(base64_encode("fooba") == "Zm9vYmE=");
  BOOST_TEST(base64_encode("foobar") == "Zm9vYmFy");
  BOOST_TEST(base64_encode(bytes({0xfb, 0xff, 0xfe})) == "+//+");
}

BOOST_AUTO_TEST_CASE(base64_round_trips_every_length_and_byte) {
  std::string all;
  for (int i = 0; i < 256; ++i)
    all += char(i);
  for (std::size_t n = 0; n <= all.size(); n += 7) {
    auto text = base64_encode(all.substr(0, n));
    auto back = base64_decode(text);
    BOOST_REQUIRE_MESSAGE(back.ok(), why(back));
    BOOST_TEST(*back == all.substr(0, n));
  }
}

BOOST_AUTO_TEST_CASE(base64_decode_rejects_missing_padding_bad_characters_and_whitespace) {
  BOOST_TEST(!base64_decode("Zg").ok());
  BOOST_TEST(contains(base64_decode("Zg").error(), "multiple of 4"));
  BOOST_TEST(!base64_decode("Zm9v\n").ok());
  BOOST_TEST(contains(base64_decode("Zm 9").error(), "invalid character"));
  BOOST_TEST(contains(base64_decode("Zm-v").error(), "invalid character"));
  BOOST_TEST(contains(base64_decode("Z=9v").error(), "padding"));
  BOOST_TEST(contains(base64_decode("Z===").error(), "more than two padding"));
  BOOST_TEST(!base64_decode("====").ok());
  // "Zh==" decodes to 'f' only if the leftover bits are ignored: strict decoding refuses it.
  BOOST_TEST(contains(base64_decode("Zh==").error(), "non-zero bits"));
  BOOST_TEST(base64_decode("").ok());
}

BOOST_AUTO_TEST_CASE(base64url_uses_url_alphabet_without_padding) {
  BOOST_TEST(base64url_encode(bytes({0xfb, 0xff, 0xfe})) == "-__-");
  BOOST_TEST(base64url_encode("f") == "Zg");
  BOOST_TEST(base64url_encode("fo") == "Zm8");
  auto d = base64url_decode("-__-");
  BOOST_REQUIRE(d.ok());
  BOOST_TEST(*d == bytes({0xfb, 0xff, 0xfe}));
}

BOOST_AUTO_TEST_CASE(base64url_decode_accepts_optional_padding_and_rejects_the_rest) {
  BOOST_TEST(*base64url_decode("Zg") == "f");
  BOOST_TEST(*base64url_decode("Zg==") == "f");
  BOOST_TEST(*base64url_decode("Zm8=") == "fo");
  BOOST_TEST(!base64url_decode("Zg=").ok());
  BOOST_TEST(!base64url_decode("Zm8==").ok());
  BOOST_TEST(!base64url_decode("Zm9v=").ok());
  BOOST_TEST(contains(base64url_decode("+__-").error(), "invalid character"));
  BOOST_TEST(contains(base64url_decode("Z").error(), "impossible length"));
}

BOOST_AUTO_TEST_CASE(hex_and_sha256_match_known_vectors) {
  BOOST_TEST(hex_lower(bytes({0x00, 0xab, 0xff})) == "00abff");
  BOOST_TEST(hex_lower(sha256("abc"))
             == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  BOOST_TEST(sha256("").size() == 32u);
}

BOOST_AUTO_TEST_CASE(random_bytes_have_requested_length_and_differ) {
  BOOST_TEST(random_bytes(0).empty());
  auto a = random_bytes(32);
  auto b = random_bytes(32);
  BOOST_TEST(a.size() == 32u);
  BOOST_TEST(a != b);
}

BOOST_AUTO_TEST_CASE(random_between_stays_in_range_and_reaches_both_ends) {
  std::set<std::int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    auto v = random_between(-2, 2);
    BOOST_REQUIRE(v >= -2);
    BOOST_REQUIRE(v <= 2);
    seen.insert(v);
  }
  BOOST_TEST(seen.size() == 5u);
  BOOST_TEST(random_between(7, 7) == 7);
  auto wide = random_between(INT64_MIN, INT64_MAX);
  (void)wide; // the whole range must not trap (UBSan) or loop
  auto big = random_between(INT64_MAX - 1, INT64_MAX);
  BOOST_TEST(big >= INT64_MAX - 1);
}

BOOST_AUTO_TEST_CASE(uuid_v4_sets_version_and_variant_bits) {
  for (int i = 0; i < 50; ++i) {
    auto u = uuid_v4();
    BOOST_REQUIRE(is_guid(u));
    BOOST_TEST(u[14] == '4');
    BOOST_TEST((u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b'));
    for (char c : u)
      BOOST_TEST(!(c >= 'A' && c <= 'F'));
  }
  BOOST_TEST(uuid_v4() != uuid_v4());
}

BOOST_AUTO_TEST_CASE(is_guid_accepts_8_4_4_4_12_hex_only) {
  BOOST_TEST(is_guid("6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a"));
  BOOST_TEST(is_guid("6D9F2C1A-0B7E-4C52-9A3D-1F2E3D4C5B6A"));
  BOOST_TEST(!is_guid("{6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6a}"));
  BOOST_TEST(!is_guid("6d9f2c1a0b7e4c529a3d1f2e3d4c5b6a"));
  BOOST_TEST(!is_guid("6d9f2c1a-0b7e-4c52-9a3d-1f2e3d4c5b6g"));
  BOOST_TEST(!is_guid("6d9f2c1a-0b7e-4c52-9a3d1-f2e3d4c5b6a"));
  BOOST_TEST(!is_guid(""));
}

BOOST_AUTO_TEST_CASE(json_quote_escapes_quotes_backslashes_and_control_characters) {
  BOOST_TEST(json_quote("") == "\"\"");
  BOOST_TEST(json_quote("a\"b") == "\"a\\\"b\"");
  BOOST_TEST(json_quote("a\\b") == "\"a\\\\b\"");
  BOOST_TEST(json_quote("l1\nl2\r\t") == "\"l1\\nl2\\r\\t\"");
  BOOST_TEST(json_quote(std::string("\x01\x1f", 2)) == "\"\\u0001\\u001f\"");
  BOOST_TEST(json_quote(std::string("a\0b", 3)) == "\"a\\u0000b\"");
  BOOST_TEST(json_quote("caf\xc3\xa9/") == "\"caf\xc3\xa9/\"");
}

BOOST_AUTO_TEST_CASE(url_encode_keeps_unreserved_and_escapes_the_rest) {
  BOOST_TEST(url_encode("AZaz09-._~") == "AZaz09-._~");
  BOOST_TEST(url_encode("a b&c=d/e+f") == "a%20b%26c%3Dd%2Fe%2Bf");
  BOOST_TEST(url_encode("https://management.azure.com/.default")
             == "https%3A%2F%2Fmanagement.azure.com%2F.default");
  BOOST_TEST(url_encode("\xc3\xa9") == "%C3%A9");
}

BOOST_AUTO_TEST_CASE(url_decode_inverts_encode_and_rejects_bad_escapes) {
  std::string s = "scope=https://x/.default&claims={\"a\":1} \xc3\xa9";
  auto d = url_decode(url_encode(s));
  BOOST_REQUIRE(d.ok());
  BOOST_TEST(*d == s);
  BOOST_TEST(*url_decode("a+b%2bc%2F") == "a b+c/");
  BOOST_TEST(contains(url_decode("abc%2").error(), "truncated"));
  BOOST_TEST(contains(url_decode("abc%").error(), "truncated"));
  BOOST_TEST(contains(url_decode("%zz").error(), "hex"));
}

// --- DER ---

BOOST_AUTO_TEST_CASE(der_tlv_uses_short_and_minimal_long_length_forms) {
  BOOST_TEST(der::tlv(0x04, "") == bytes({0x04, 0x00}));
  BOOST_TEST(der::tlv(0x04, std::string(127, 'x')).substr(0, 2) == bytes({0x04, 0x7f}));
  BOOST_TEST(der::tlv(0x04, std::string(128, 'x')).substr(0, 3) == bytes({0x04, 0x81, 0x80}));
  BOOST_TEST(der::tlv(0x04, std::string(256, 'x')).substr(0, 4)
             == bytes({0x04, 0x82, 0x01, 0x00}));
  BOOST_TEST(der::tlv(0x04, std::string(256, 'x')).size() == 260u);
}

BOOST_AUTO_TEST_CASE(der_oid_encodes_known_identifiers) {
  BOOST_TEST(der::oid("2.5.4.3") == bytes({0x06, 0x03, 0x55, 0x04, 0x03}));
  BOOST_TEST(der::oid("1.2.840.113549.1.1.10")
             == bytes({0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a}));
  BOOST_TEST(der::oid("0.9.2342.19200300.100.1.25")
             == bytes({0x06, 0x0a, 0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19}));
  BOOST_TEST(der::oid("1.3.6.1.4.1.311.90.2.10")
             == bytes({0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x5a, 0x02, 0x0a}));
}

BOOST_AUTO_TEST_CASE(der_decode_oid_round_trips_and_rejects_malformed_content) {
  for (auto dotted : {"2.5.4.3", "1.2.840.113549.1.1.10", "0.9.2342.19200300.100.1.25",
                      "2.16.840.1.101.3.4.2.1", "2.999.1"}) {
    auto enc = der::oid(dotted);
    auto back = der::decode_oid(std::string_view(enc).substr(2));
    BOOST_REQUIRE_MESSAGE(back.ok(), why(back));
    BOOST_TEST(*back == dotted);
  }
  BOOST_TEST(!der::decode_oid("").ok());
  BOOST_TEST(contains(der::decode_oid(bytes({0x2a, 0x86})).error(), "ends inside"));
  BOOST_TEST(contains(der::decode_oid(bytes({0x2a, 0x80, 0x01})).error(), "non-minimal"));
}

BOOST_AUTO_TEST_CASE(der_small_integer_and_null_and_bit_string) {
  BOOST_TEST(der::small_integer(0) == bytes({0x02, 0x01, 0x00}));
  BOOST_TEST(der::small_integer(32) == bytes({0x02, 0x01, 0x20}));
  BOOST_TEST(der::small_integer(128) == bytes({0x02, 0x02, 0x00, 0x80}));
  BOOST_TEST(der::small_integer(0x10000) == bytes({0x02, 0x03, 0x01, 0x00, 0x00}));
  BOOST_TEST(der::null_value() == bytes({0x05, 0x00}));
  BOOST_TEST(der::bit_string_of("\xab") == bytes({0x03, 0x02, 0x00, 0xab}));
  BOOST_TEST(der::seq({der::null_value(), der::null_value()})
             == bytes({0x30, 0x04, 0x05, 0x00, 0x05, 0x00}));
  BOOST_TEST(der::set_of({der::null_value()}) == bytes({0x31, 0x02, 0x05, 0x00}));
}

BOOST_AUTO_TEST_CASE(der_reader_walks_nested_structures) {
  auto inner = der::seq({der::oid("2.5.4.3"), der::null_value()});
  auto outer = der::seq({inner, der::small_integer(5)});
  der::reader r(outer);
  auto top = r.expect(der::sequence, "top");
  BOOST_REQUIRE_MESSAGE(top.ok(), why(top));
  BOOST_TEST(r.done());
  BOOST_TEST(top->whole == outer);
  der::reader body(top->content);
  auto first = body.expect(der::sequence, "inner");
  BOOST_REQUIRE(first.ok());
  BOOST_TEST(first->whole == inner);
  auto num = body.expect(der::integer, "number");
  BOOST_REQUIRE(num.ok());
  BOOST_TEST(num->content == "\x05");
  BOOST_TEST(body.done());
  BOOST_TEST(contains(body.next().error(), "truncated"));
}

BOOST_AUTO_TEST_CASE(der_reader_rejects_ber_and_truncation) {
  BOOST_TEST(contains(der::reader(bytes({0x30, 0x80, 0x00, 0x00})).next().error(), "indefinite"));
  BOOST_TEST(contains(der::reader(bytes({0x04, 0x81, 0x05, 1, 2, 3, 4, 5})).next().error(),
                      "long length form"));
  BOOST_TEST(contains(der::reader(bytes({0x04, 0x82, 0x00, 0x80})).next().error(), "non-minimal"));
  BOOST_TEST(contains(der::reader(bytes({0x04, 0x05, 1, 2})).next().error(), "truncated"));
  BOOST_TEST(contains(der::reader(bytes({0x04})).next().error(), "truncated"));
  BOOST_TEST(contains(der::reader(bytes({0x04, 0x82, 0x01})).next().error(), "truncated"));
  BOOST_TEST(contains(der::reader(bytes({0x1f, 0x01, 0x00})).next().error(), "multi-byte"));
  auto wrong = der::reader(der::null_value()).expect(der::sequence, "the thing");
  BOOST_TEST(contains(wrong.error(), "the thing must have tag 0x30, found 0x05"));
  auto missing = der::reader("").expect(der::sequence, "the thing");
  BOOST_TEST(contains(missing.error(), "the thing is missing"));
}

BOOST_AUTO_TEST_CASE(sanitize_upstream_escapes_controls_and_cuts_long_text) {
  BOOST_TEST(sanitize_upstream("plain text") == "plain text");
  BOOST_TEST(sanitize_upstream("a\nb\r\x1b\\c\x7f\xc3\xa9") == "a\\x0ab\\x0d\\x1b\\\\c\\x7f\\xc3\\xa9");
  auto cut = sanitize_upstream(std::string(1000, 'z'), 300);
  BOOST_TEST(cut == std::string(300, 'z') + "...(1000 bytes)");
  BOOST_TEST(sanitize_upstream("", 300).empty());
}

BOOST_AUTO_TEST_CASE(utf8_and_ascii_checks_refuse_what_cannot_round_trip) {
  BOOST_TEST(is_valid_utf8("ascii"));
  BOOST_TEST(is_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  BOOST_TEST(!is_valid_utf8("\xff"));
  BOOST_TEST(!is_valid_utf8("\xc3"));             // truncated
  BOOST_TEST(!is_valid_utf8("\xc0\xaf"));         // overlong '/'
  BOOST_TEST(!is_valid_utf8("\xed\xa0\x80"));     // a surrogate
  BOOST_TEST(!is_valid_utf8("\xf4\x90\x80\x80")); // past U+10FFFF
  BOOST_TEST(!is_valid_utf8("\xe2\x82"));         // truncated at the end
  BOOST_TEST(is_printable_ascii("/subscriptions/s/x"));
  BOOST_TEST(!is_printable_ascii("a b"));
  BOOST_TEST(!is_printable_ascii("caf\xc3\xa9"));
}

BOOST_AUTO_TEST_SUITE_END()
