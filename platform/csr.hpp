#pragma once

// The PKCS#10 request of protocol.md §4, built and checked byte for byte.
//
// Client side: build_csr(). Simulator side: parse_csr() checks every structural rule and
// verify_csr_signature() the PSS signature. Tests use the building blocks to forge a CSR
// that breaks exactly one rule.

#include <memory>
#include <string>
#include <string_view>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::platform {

/// OID of the cuId attribute.
inline constexpr std::string_view cuid_attribute_oid = "1.3.6.1.4.1.311.90.2.10";
/// OID of domainComponent (DC).
inline constexpr std::string_view dc_oid = "0.9.2342.19200300.100.1.25";
/// OID of commonName (CN).
inline constexpr std::string_view cn_oid = "2.5.4.3";

/// The compute-unit id from getplatformmetadata's `cuId` object.
struct cu_id {
  std::string vm_id;
  std::string vmss_id;
};

/// Compact JSON of a cuId in member order vmId, vmssId, empty members left out
/// (`{"vmId":"..."}`).
std::string cu_id_json(const cu_id& id);

/// Signs `csr_info_der` with `key` and returns the base64-free DER of the whole request.
/// Verifies the result's signature before returning it.
result<std::string> build_csr(EVP_PKEY* key, std::string_view client_id,
                              std::string_view tenant_id, std::string_view cuid_json);

/// The public half of a binding key, prepared once per key for build_csr: its
/// SubjectPublicKeyInfo DER and that key decoded by OpenSSL's default provider. In OpenSSL 3
/// encoding or decoding a public key (the decoder framework) costs more than checking a
/// signature, so a module that makes a CSR per identity prepares this once per key.
struct csr_public_key {
  std::string spki_der;
  pkey_ptr key;
};

/// Decodes `spki_der` (the binding key's SubjectPublicKeyInfo, as its key store reports it).
result<std::shared_ptr<const csr_public_key>> prepare_csr_public_key(std::string spki_der);

/// build_csr for a key whose public half is prepared: the CSR carries `pub.spki_der`, and the
/// self-check (every structural rule of parse_csr, then the signature) verifies with
/// `pub.key`, so nothing is encoded or decoded per CSR. A `pub` that is not `key`'s fails the
/// self-check.
result<std::string> build_csr(EVP_PKEY* key, const csr_public_key& pub,
                              std::string_view client_id, std::string_view tenant_id,
                              std::string_view cuid_json);

// --- building blocks (also used by tests to forge broken CSRs) ---

/// DER of the subject Name: SEQUENCE { SET { DC=tenant (IA5String) }, SET { CN=client
/// (PrintableString or UTF8String when not printable) } }.
std::string csr_subject_der(std::string_view client_id, std::string_view tenant_id);
/// DER of the attributes [0] holding exactly one cuId attribute (UTF8String value).
std::string csr_attributes_der(std::string_view cuid_json);
/// DER of certificationRequestInfo: version 0, subject, spki, attributes.
std::string csr_info_der(std::string_view subject_der, std::string_view spki_der,
                         std::string_view attributes_der);
/// The exact AlgorithmIdentifier of RSASSA-PSS / SHA-256 / MGF1-SHA-256 / salt 32 with
/// absent hash parameters and no trailerField.
std::string pss_sha256_algorithm_der();
/// SEQUENCE { info, algorithm, BIT STRING signature }.
std::string assemble_csr(std::string_view info_der, std::string_view algorithm_der,
                         std::string_view signature);

// --- checking (simulator side) ---

/// A CSR that passed every structural rule of protocol.md §4.
struct parsed_csr {
  std::string info_der;   ///< certificationRequestInfo TLV, the signed bytes
  std::string client_id;  ///< CN
  std::string tenant_id;  ///< DC
  std::string spki_der;   ///< SubjectPublicKeyInfo TLV
  std::string cuid_json;  ///< the cuId attribute's UTF8String value, as sent
  std::string signature;  ///< signature bytes
};

/// How strict parse_csr is about encodings that carry the same meaning.
enum class csr_profile {
  /// MSAL .NET's exact encoding (protocol.md §4): DC then CN, DC an IA5String, SHA-256
  /// identifiers in the PSS parameters without parameters, the exact AlgorithmIdentifier.
  strict,
  /// Also what MSAL Python and the MSAL Go branch send: CN then DC, a DC that is a
  /// PrintableString or UTF8String, SHA-256 identifiers with NULL parameters. trailerField
  /// spelled out, another hash or salt, extensions or a bad signature are still refused.
  lenient,
};

/// Parses DER and checks every rule of protocol.md §4 (version 0; subject DC first then CN,
/// DC an IA5String; rsaEncryption key with NULL parameters; exactly one attribute, the cuId
/// OID, one UTF8String value; no extensions; the exact PSS AlgorithmIdentifier), relaxed as
/// `profile` says. The error names the rule broken ("CSR subject DC must be an IA5String").
result<parsed_csr> parse_csr(std::string_view der, csr_profile profile = csr_profile::strict);
/// Verifies the PSS signature of a parsed CSR with its own public key.
result<void> verify_csr_signature(const parsed_csr& csr);

} // namespace msiv2::platform
