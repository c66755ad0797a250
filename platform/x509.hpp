#pragma once

// X.509 certificates: inspection and the client-side validation of protocol.md §6, the
// x5t#S256 thumbprint, and issuing (used by the simulator's certificate authorities).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "platform/openssl.hpp"
#include "platform/result.hpp"

namespace msiv2::platform {

/// OID of the token_not_after extension IMDS puts into binding certificates: a UTCTime or
/// GeneralizedTime (possibly inside a SEQUENCE) after which the token endpoint refuses the
/// certificate (AADSTS1000901) although notAfter is later.
inline constexpr std::string_view token_not_after_oid = "1.3.6.1.4.1.311.90.2.1";

/// What this project reads from a certificate. Times are Unix seconds.
struct cert_info {
  std::string der;
  std::string subject_cn;
  std::string issuer_cn;
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
  std::string spki_der;
  std::string serial_hex;   ///< lower-case hex of the serial number
  bool has_eku = false;
  bool eku_client_auth = false;
  bool has_key_usage = false;
  bool ku_digital_signature = false;
  std::string x5t_s256;     ///< base64url SHA-256 of the DER
  /// The token_not_after extension (Unix seconds); 0 when absent or unreadable (then notAfter
  /// is the boundary, as MSAL .NET does).
  std::int64_t token_not_after = 0;
};

/// Parses a DER certificate.
result<x509_ptr> parse_certificate(std::string_view der);
/// DER of a certificate.
result<std::string> certificate_der(X509* cert);
/// Reads the fields of cert_info from DER.
result<cert_info> inspect_certificate(std::string_view der);
/// base64url (no padding) of SHA-256 of the DER: the `x5t#S256` of RFC 8705.
std::string x5t_s256(std::string_view cert_der);

/// How far our clock may be behind the issuer's: a certificate whose notBefore is up to this
/// many seconds ahead of now is accepted (review M8: a VM a second behind IMDS would refuse
/// every fresh certificate otherwise).
inline constexpr std::int64_t not_before_skew_s = 300;

/// Client-side checks of a binding certificate (protocol.md §6): its public key equals
/// `binding_spki_der`; subject CN equals `client_id` (case-insensitive); valid at `now_unix`
/// (notBefore with not_before_skew_s of tolerance);
/// EKU, when present, allows clientAuth; key usage, when present, allows digitalSignature.
result<void> validate_binding_certificate(const cert_info& cert,
                                          std::string_view binding_spki_der,
                                          std::string_view client_id, std::int64_t now_unix);

/// What to put in a certificate the simulator issues.
struct issue_params {
  EVP_PKEY* subject_key = nullptr;  ///< public half is certified
  std::string subject_cn;
  std::string subject_dc;           ///< optional DC (IA5String) before CN
  std::int64_t not_before = 0;      ///< Unix seconds
  std::int64_t not_after = 0;
  std::string serial_hex;           ///< empty = random 16 bytes
  bool is_ca = false;               ///< basicConstraints CA:TRUE, keyCertSign + cRLSign
  bool client_auth = false;         ///< EKU clientAuth + KU digitalSignature
  bool server_auth = false;         ///< EKU serverAuth + KU digitalSignature, keyEncipherment
  std::vector<std::string> dns_names; ///< subjectAltName dNSName entries
  std::vector<std::string> ip_addresses; ///< subjectAltName iPAddress entries ("127.0.0.1")
  /// A token_not_after extension (GeneralizedTime, Unix seconds); 0: none.
  std::int64_t token_not_after = 0;
};

/// Issues a certificate signed with `issuer_key` (SHA-256 PKCS#1 v1.5). `issuer` = nullptr
/// makes it self-signed (issuer name = subject name). Returns the DER.
result<std::string> issue_certificate(const issue_params& params, X509* issuer,
                                      EVP_PKEY* issuer_key);
/// True when `cert_der`'s signature verifies with `issuer_key`.
bool certificate_signed_by(std::string_view cert_der, EVP_PKEY* issuer_key);

/// PEM armour ("-----BEGIN <label>-----", 64-column base64) of DER bytes.
std::string pem_encode(std::string_view der, std::string_view label);
/// Every certificate in a PEM bundle, as DER.
result<std::vector<std::string>> pem_certificates(std::string_view pem);

} // namespace msiv2::platform
