#include "platform/x509.hpp"

#include <cctype>
#include <ctime>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "platform/der.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"

namespace msiv2::platform {

namespace {

using asn1_string_ptr = std::unique_ptr<ASN1_STRING, ossl_deleter<ASN1_STRING, ASN1_STRING_free>>;
using ext_ptr = std::unique_ptr<X509_EXTENSION, ossl_deleter<X509_EXTENSION, X509_EXTENSION_free>>;
using obj_ptr = std::unique_ptr<ASN1_OBJECT, ossl_deleter<ASN1_OBJECT, ASN1_OBJECT_free>>;

void free_general_names(GENERAL_NAMES* names) {
  GENERAL_NAMES_free(names);
}
using general_names_ptr =
  std::unique_ptr<GENERAL_NAMES, ossl_deleter<GENERAL_NAMES, free_general_names>>;

// UTF-8 text of the first CN of a name; empty when there is none.
result<std::string> common_name(X509_NAME* name, std::string_view what) {
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0)
    return std::string();
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0)
    return fail(drain_openssl_errors(std::string(what) + " CN is not a valid string"));
  std::string out(reinterpret_cast<char*>(utf8), std::size_t(len));
  OPENSSL_free(utf8);
  return out;
}

result<std::int64_t> unix_time(const ASN1_TIME* t, std::string_view what) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1)
    return fail(drain_openssl_errors("certificate " + std::string(what) + " is not a valid time"));
  return std::int64_t(timegm(&tm));
}

result<void> add_conf_extension(X509* cert, X509V3_CTX* ctx, int nid, const std::string& value) {
  ext_ptr ext{X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str())};
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    return fail(drain_openssl_errors(std::string("adding the ") + OBJ_nid2sn(nid)
                                     + " extension failed"));
  return ok();
}

result<void> add_subject_alt_names(X509* cert, const issue_params& params) {
  general_names_ptr names{GENERAL_NAMES_new()};
  if (!names)
    return fail(drain_openssl_errors("subjectAltName: GENERAL_NAMES_new failed"));
  for (const auto& dns : params.dns_names) {
    GENERAL_NAME* gen = GENERAL_NAME_new();
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (gen == nullptr || ia5 == nullptr
        || ASN1_STRING_set(ia5, dns.data(), int(dns.size())) != 1) {
      GENERAL_NAME_free(gen);
      ASN1_IA5STRING_free(ia5);
      return fail(drain_openssl_errors("subjectAltName: adding DNS name '" + dns + "' failed"));
    }
    GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
    if (sk_GENERAL_NAME_push(names.get(), gen) == 0) {
      GENERAL_NAME_free(gen);
      return fail(drain_openssl_errors("subjectAltName: out of memory"));
    }
  }
  for (const auto& ip : params.ip_addresses) {
    asn1_string_ptr octets{a2i_IPADDRESS(ip.c_str())};
    if (!octets) {
      ERR_clear_error();
      return fail("subjectAltName: '" + ip + "' is not an IP address");
    }
    GENERAL_NAME* gen = GENERAL_NAME_new();
    if (gen == nullptr)
      return fail(drain_openssl_errors("subjectAltName: out of memory"));
    GENERAL_NAME_set0_value(gen, GEN_IPADD, octets.release());
    if (sk_GENERAL_NAME_push(names.get(), gen) == 0) {
      GENERAL_NAME_free(gen);
      return fail(drain_openssl_errors("subjectAltName: out of memory"));
    }
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1)
    return fail(drain_openssl_errors("adding the subjectAltName extension failed"));
  return ok();
}

bool add_name_entry(X509_NAME* name, int nid, int type, std::string_view value) {
  return X509_NAME_add_entry_by_NID(name, nid, type,
                                    reinterpret_cast<const unsigned char*>(value.data()),
                                    int(value.size()), -1, 0)
         == 1;
}

result<void> set_serial(X509* cert, const std::string& serial_hex) {
  bn_ptr bn;
  if (serial_hex.empty()) {
    // 16 random bytes, top bit clear (positive) and second bit set (always 16 bytes long).
    auto bytes = random_bytes(16);
    bytes[0] = char((std::uint8_t(bytes[0]) & 0x7f) | 0x40);
    bn.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(bytes.data()), 16, nullptr));
  } else {
    for (char c : serial_hex)
      if (!std::isxdigit(static_cast<unsigned char>(c)))
        return fail("certificate serial '" + serial_hex + "' is not hex");
    if (serial_hex.size() > 40)
      return fail("certificate serial '" + serial_hex + "' is longer than 20 bytes");
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, serial_hex.c_str()) != int(serial_hex.size()))
      return fail(drain_openssl_errors("certificate serial '" + serial_hex + "' does not parse"));
    bn.reset(raw);
    if (BN_is_zero(bn.get()))
      return fail("certificate serial must be positive, not zero");
  }
  if (!bn || BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)) == nullptr)
    return fail(drain_openssl_errors("setting the certificate serial failed"));
  return ok();
}

bool ascii_iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i]))
        != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

} // namespace

result<x509_ptr> parse_certificate(std::string_view der) {
  auto begin = reinterpret_cast<const unsigned char*>(der.data());
  auto p = begin;
  x509_ptr cert{d2i_X509(nullptr, &p, long(der.size()))};
  if (!cert)
    return fail(drain_openssl_errors("certificate DER does not parse"));
  if (p != begin + der.size())
    return fail("certificate DER has trailing bytes");
  return cert;
}

result<std::string> certificate_der(X509* cert) {
  if (cert == nullptr)
    return fail("certificate_der: no certificate");
  unsigned char* out = nullptr;
  int len = i2d_X509(cert, &out);
  if (len <= 0)
    return fail(drain_openssl_errors("encoding the certificate as DER failed"));
  std::string der(reinterpret_cast<char*>(out), std::size_t(len));
  OPENSSL_free(out);
  return der;
}

/// The token_not_after extension's time (Unix seconds), 0 when absent or not a time.
std::int64_t read_token_not_after(X509* cert) {
  obj_ptr oid{OBJ_txt2obj(std::string(token_not_after_oid).c_str(), 1)};
  if (!oid)
    return 0;
  int at = X509_get_ext_by_OBJ(cert, oid.get(), -1);
  if (at < 0)
    return 0;
  const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(X509_get_ext(cert, at));
  if (value == nullptr)
    return 0;
  std::string_view raw(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                       std::size_t(ASN1_STRING_length(value)));
  der::reader outer(raw);
  auto first = outer.next();
  if (!first)
    return 0;
  der::node time = *first;
  if (time.tag == der::sequence) {
    der::reader inner(time.content);
    auto t = inner.next();
    if (!t)
      return 0;
    time = *t;
  }
  if (time.tag != der::utc_time && time.tag != der::generalized_time)
    return 0;
  asn1_string_ptr parsed{ASN1_TIME_new()};
  std::string text(time.content);
  if (!parsed || ASN1_TIME_set_string(parsed.get(), text.c_str()) != 1 ||
      ASN1_STRING_type(parsed.get()) != (time.tag == der::utc_time ? V_ASN1_UTCTIME
                                                                   : V_ASN1_GENERALIZEDTIME)) {
    ERR_clear_error();
    return 0;
  }
  auto secs = unix_time(parsed.get(), "token_not_after");
  return secs ? *secs : 0;
}

result<cert_info> inspect_certificate(std::string_view der) {
  auto parsed = parse_certificate(der);
  if (!parsed)
    return parsed.fail();
  X509* cert = parsed->get();
  cert_info info;
  info.der = std::string(der);

  auto subject = common_name(X509_get_subject_name(cert), "certificate subject");
  if (!subject)
    return subject.fail();
  info.subject_cn = std::move(*subject);
  auto issuer = common_name(X509_get_issuer_name(cert), "certificate issuer");
  if (!issuer)
    return issuer.fail();
  info.issuer_cn = std::move(*issuer);

  auto nb = unix_time(X509_get0_notBefore(cert), "notBefore");
  if (!nb)
    return nb.fail();
  info.not_before = *nb;
  auto na = unix_time(X509_get0_notAfter(cert), "notAfter");
  if (!na)
    return na.fail();
  info.not_after = *na;

  unsigned char* spki = nullptr;
  int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &spki);
  if (spki_len <= 0)
    return fail(drain_openssl_errors("certificate public key does not encode"));
  info.spki_der.assign(reinterpret_cast<char*>(spki), std::size_t(spki_len));
  OPENSSL_free(spki);

  bn_ptr serial{ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)};
  if (!serial)
    return fail(drain_openssl_errors("certificate serial number does not parse"));
  std::string serial_bytes(std::size_t(BN_num_bytes(serial.get())), '\0');
  BN_bn2bin(serial.get(), reinterpret_cast<unsigned char*>(serial_bytes.data()));
  info.serial_hex = serial_bytes.empty() ? "00" : hex_lower(serial_bytes);

  std::uint32_t flags = X509_get_extension_flags(cert);
  if (flags & EXFLAG_INVALID)
    return fail(drain_openssl_errors("certificate has malformed or duplicate extensions"));
  info.has_eku = (flags & EXFLAG_XKUSAGE) != 0;
  info.eku_client_auth =
    info.has_eku && (X509_get_extended_key_usage(cert) & (XKU_SSL_CLIENT | XKU_ANYEKU)) != 0;
  info.has_key_usage = (flags & EXFLAG_KUSAGE) != 0;
  info.ku_digital_signature =
    info.has_key_usage && (X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE) != 0;
  info.x5t_s256 = x5t_s256(der);
  info.token_not_after = read_token_not_after(cert);
  return info;
}

std::string x5t_s256(std::string_view cert_der) {
  return base64url_encode(sha256(cert_der));
}

result<void> validate_binding_certificate(const cert_info& cert,
                                          std::string_view binding_spki_der,
                                          std::string_view client_id, std::int64_t now_unix) {
  if (cert.spki_der != binding_spki_der)
    return fail("binding certificate public key is not the binding key");
  if (!ascii_iequal(cert.subject_cn, client_id))
    return fail("binding certificate subject CN '" + cert.subject_cn + "' is not the client id '"
                + std::string(client_id) + "'");
  if (now_unix < cert.not_before - not_before_skew_s)
    return fail("binding certificate is not valid yet (notBefore " + std::to_string(cert.not_before)
                + ", now " + std::to_string(now_unix) + ")");
  if (now_unix > cert.not_after)
    return fail("binding certificate has expired (notAfter " + std::to_string(cert.not_after)
                + ", now " + std::to_string(now_unix) + ")");
  if (cert.has_eku && !cert.eku_client_auth)
    return fail("binding certificate extended key usage does not allow clientAuth");
  if (cert.has_key_usage && !cert.ku_digital_signature)
    return fail("binding certificate key usage does not allow digitalSignature");
  return ok();
}

result<std::string> issue_certificate(const issue_params& params, X509* issuer,
                                      EVP_PKEY* issuer_key) {
  if (params.subject_key == nullptr)
    return fail("issue_certificate: no subject key");
  if (issuer_key == nullptr)
    return fail("issue_certificate: no issuer key");
  if (params.subject_cn.empty())
    return fail("issue_certificate: subject CN is empty");
  if (params.not_after <= params.not_before)
    return fail("issue_certificate: notAfter must be later than notBefore");
  if (issuer != nullptr) {
    if (X509_check_private_key(issuer, issuer_key) != 1)
      return fail(drain_openssl_errors("issue_certificate: issuer key does not match the issuer "
                                       "certificate"));
  } else if (!same_public_key(params.subject_key, issuer_key)) {
    return fail("issue_certificate: a self-signed certificate needs the subject key as issuer key");
  }

  x509_ptr cert{X509_new()};
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1)
    return fail(drain_openssl_errors("issue_certificate: X509_new failed"));
  auto serial = set_serial(cert.get(), params.serial_hex);
  if (!serial)
    return serial.fail();

  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (!params.subject_dc.empty()
      && !add_name_entry(subject, NID_domainComponent, V_ASN1_IA5STRING, params.subject_dc))
    return fail(drain_openssl_errors("issue_certificate: subject DC is not a valid IA5String"));
  if (!add_name_entry(subject, NID_commonName, MBSTRING_UTF8, params.subject_cn))
    return fail(drain_openssl_errors("issue_certificate: subject CN is not valid UTF-8"));
  X509_NAME* issuer_name = issuer != nullptr ? X509_get_subject_name(issuer) : subject;
  if (X509_set_issuer_name(cert.get(), issuer_name) != 1)
    return fail(drain_openssl_errors("issue_certificate: setting the issuer name failed"));

  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), std::time_t(params.not_before)) == nullptr
      || ASN1_TIME_set(X509_getm_notAfter(cert.get()), std::time_t(params.not_after)) == nullptr)
    return fail(drain_openssl_errors("issue_certificate: setting the validity failed"));
  if (X509_set_pubkey(cert.get(), params.subject_key) != 1)
    return fail(drain_openssl_errors("issue_certificate: setting the public key failed"));

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : cert.get(), cert.get(), nullptr, nullptr, 0);
  auto bc = add_conf_extension(cert.get(), &ctx, NID_basic_constraints,
                               params.is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  if (!bc)
    return bc.fail();

  std::string usage;
  auto add_usage = [&usage](const char* bit) {
    if (usage.find(bit) == std::string::npos)
      usage += std::string(usage.empty() ? "" : ",") + bit;
  };
  if (params.is_ca) {
    add_usage("keyCertSign");
    add_usage("cRLSign");
  }
  if (params.client_auth)
    add_usage("digitalSignature");
  if (params.server_auth) {
    add_usage("digitalSignature");
    add_usage("keyEncipherment");
  }
  if (!usage.empty()) {
    auto ku = add_conf_extension(cert.get(), &ctx, NID_key_usage, "critical," + usage);
    if (!ku)
      return ku.fail();
  }
  std::string ext_usage;
  if (params.client_auth)
    ext_usage = "clientAuth";
  if (params.server_auth)
    ext_usage += std::string(ext_usage.empty() ? "" : ",") + "serverAuth";
  if (!ext_usage.empty()) {
    auto eku = add_conf_extension(cert.get(), &ctx, NID_ext_key_usage, ext_usage);
    if (!eku)
      return eku.fail();
  }
  if (!params.dns_names.empty() || !params.ip_addresses.empty()) {
    auto san = add_subject_alt_names(cert.get(), params);
    if (!san)
      return san.fail();
  }
  if (params.token_not_after > 0) {
    std::time_t t = std::time_t(params.token_not_after);
    std::tm tm{};
    char text[32];
    if (gmtime_r(&t, &tm) == nullptr || std::strftime(text, sizeof text, "%Y%m%d%H%M%SZ", &tm) == 0)
      return fail("issue_certificate: token_not_after is out of range");
    auto value = der::tlv(der::generalized_time, text);
    obj_ptr oid{OBJ_txt2obj(std::string(token_not_after_oid).c_str(), 1)};
    asn1_string_ptr data{ASN1_OCTET_STRING_new()};
    if (!oid || !data ||
        ASN1_OCTET_STRING_set(data.get(), reinterpret_cast<const unsigned char*>(value.data()),
                              int(value.size())) != 1)
      return fail(drain_openssl_errors("issue_certificate: token_not_after extension"));
    ext_ptr ext{X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 0, data.get())};
    if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1)
      return fail(drain_openssl_errors("issue_certificate: adding token_not_after failed"));
  }
  auto ski = add_conf_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  if (!ski)
    return ski.fail();
  // The issuer's key identifier links the chain; an issuer without one gets no AKI.
  X509* signer = issuer != nullptr ? issuer : cert.get();
  if (X509_get_ext_by_NID(signer, NID_subject_key_identifier, -1) >= 0) {
    auto aki = add_conf_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");
    if (!aki)
      return aki.fail();
  }

  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0)
    return fail(drain_openssl_errors("issue_certificate: signing the certificate failed"));
  return certificate_der(cert.get());
}

bool certificate_signed_by(std::string_view cert_der, EVP_PKEY* issuer_key) {
  if (issuer_key == nullptr)
    return false;
  auto cert = parse_certificate(cert_der);
  bool ok = cert.ok() && X509_verify(cert->get(), issuer_key) == 1;
  ERR_clear_error();
  return ok;
}

std::string pem_encode(std::string_view der, std::string_view label) {
  auto b64 = base64_encode(der);
  std::string out = "-----BEGIN " + std::string(label) + "-----\n";
  for (std::size_t i = 0; i < b64.size(); i += 64) {
    out.append(b64, i, 64);
    out += '\n';
  }
  out += "-----END " + std::string(label) + "-----\n";
  return out;
}

result<std::vector<std::string>> pem_certificates(std::string_view pem) {
  constexpr std::string_view begin = "-----BEGIN CERTIFICATE-----";
  constexpr std::string_view end = "-----END CERTIFICATE-----";
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = pem.find(begin, pos)) != std::string_view::npos) {
    auto number = std::to_string(out.size() + 1);
    auto body_start = pos + begin.size();
    auto stop = pem.find(end, body_start);
    if (stop == std::string_view::npos)
      return fail("PEM certificate #" + number + " has no END line");
    if (pem.substr(body_start, stop - body_start).find("-----") != std::string_view::npos)
      return fail("PEM certificate #" + number + " has another armour line before its END line");
    std::string b64;
    for (char c : pem.substr(body_start, stop - body_start))
      if (c != '\n' && c != '\r' && c != ' ' && c != '\t')
        b64 += c;
    auto der = base64_decode(b64);
    if (!der)
      return fail("PEM certificate #" + number + ": " + der.error());
    auto cert = parse_certificate(*der);
    if (!cert)
      return fail("PEM certificate #" + number + ": " + cert.error());
    out.push_back(std::move(*der));
    pos = stop + end.size();
  }
  if (out.empty())
    return fail("PEM holds no CERTIFICATE block");
  return out;
}

} // namespace msiv2::platform
