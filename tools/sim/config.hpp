#pragma once

// Everything the simulator can be told, from a JSON file (--config) and flags.
// Defaults are an embedded realistic setup: one system-assigned identity, two user-assigned,
// lifetimes as on Azure.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "platform/csr.hpp"
#include "platform/result.hpp"

namespace msiv2::sim {

/// A managed identity the simulated VM has.
struct identity {
  bool system_assigned = false;
  std::string client_id;   ///< GUID
  std::string object_id;   ///< GUID
  std::string resource_id; ///< ARM id "/subscriptions/.../userAssignedIdentities/<name>"
};

/// Whether issuecredential wants an attestation token.
enum class attestation_policy { off, optional, required };

/// What a fault does to one answer; see faults.hpp for how they apply.
enum class body_fault { none, malformed, truncated, empty };

/// Fault injection for one endpoint.
struct fault_spec {
  /// Statuses answered in order, one per request, before normal service resumes;
  /// 0 in the list means "answer normally this time".
  std::vector<int> statuses;
  double probability = 0.0;          ///< chance of answering `probability_status` instead
  int probability_status = 503;
  std::chrono::milliseconds latency{0}; ///< added before answering
  bool reset = false;                ///< close the connection without answering
  body_fault body = body_fault::none;
  bool drop_server_header = false;   ///< leave out `Server: IMDS/...`
  std::optional<int> retry_after;    ///< seconds, added to every faulted answer
  /// Token endpoint only: answer with this AADSTS code instead of a token (1000610-1000614
  /// and 1000901: 401 invalid_client, "re-mint"; 500181: 400 invalid_request, "the
  /// certificate is not the one the token is bound to"); 0 = none. Bounded by `count`.
  int aadsts = 0;
  /// "token_tls" only: refuse the client certificate in the TLS handshake (an alert) on the
  /// next `count` new connections.
  bool reject_client_cert = false;
  /// How many requests this fault applies to (-1 = until cleared). Status sequences count
  /// themselves; this bounds latency / reset / body / header faults.
  int count = -1;
};

/// Endpoint names used for faults and counters.
/// imds_metadata, imds_issue, imds_token (v1), imds_compute, attestation, token, jwks,
/// resource, admin.
/// "token_tls" is the token listener's TLS handshake (reset, latency, reject_client_cert on
/// new connections).
inline const std::vector<std::string>& endpoint_names() {
  static const std::vector<std::string> names{
    "imds_metadata", "imds_issue", "imds_token", "imds_compute",
    "attestation",   "token",      "jwks",       "resource", "token_tls"};
  return names;
}


/// The whole simulator configuration.
struct config {
  // --- listeners (loopback only; 0 = pick a free port) ---
  std::string bind_address = "127.0.0.1";
  std::uint16_t imds_port = 0;
  std::uint16_t attestation_port = 0;
  std::uint16_t token_port = 0;
  std::uint16_t resource_port = 0;
  std::uint16_t admin_port = 0;
  int threads = 2;

  // --- files ---
  std::string ready_file;  ///< written once listening (JSON, see server.hpp)
  std::string state_dir;   ///< where ca.pem etc. are written; empty = a fresh temp dir
  std::string ca_cert_file; ///< optional: load the issuing CA certificate (PEM) ...
  std::string ca_key_file;  ///< ... and its key (PEM) instead of generating them

  // --- the simulated VM ---
  std::string tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47";
  std::string vm_id = "5a7e1e6c-2d2f-4b3a-9c0e-7f4a1b2c3d4e";
  std::string vmss_id;  ///< set on scale-set instances
  bool system_assigned_enabled = true;
  identity system_identity{true, "8f9b0c7e-3d2a-4e1f-9a6b-1c2d3e4f5a6b",
                           "0d1c2b3a-4f5e-6d7c-8b9a-0f1e2d3c4b5a", ""};
  std::vector<identity> user_identities{
    {false, "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-9999-aaaaaaaaaaaa",
     "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
     "Microsoft.ManagedIdentity/userAssignedIdentities/uami-one"},
    {false, "bbbbbbbb-cccc-4ddd-8eee-ffffffffffff", "12345678-90ab-4cde-8f01-234567890abc",
     "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
     "Microsoft.ManagedIdentity/userAssignedIdentities/uami-two"}};
  bool v1_only = false;  ///< 404 on every v2 path
  std::string imds_server_header = "IMDS/150.870.65.1854";
  std::string region = "eastus2";

  // --- lifetimes (seconds to days) ---
  std::chrono::seconds cert_lifetime{7 * 24 * 3600};
  /// When set, binding certificates carry token_not_after = issue time + this (shorter than
  /// cert_lifetime: the split lifetime), and the token endpoint answers AADSTS1000901 to a
  /// certificate past it.
  std::optional<std::chrono::seconds> token_not_after;
  std::chrono::seconds attestation_lifetime{8 * 3600};
  std::chrono::seconds token_lifetime{24 * 3600};     ///< expires_in of mTLS tokens
  std::optional<std::chrono::seconds> refresh_in;     ///< sent when set
  std::chrono::seconds v1_token_lifetime{24 * 3600};
  attestation_policy attestation = attestation_policy::optional;
  /// strict: MSAL .NET's exact CSR encoding (protocol.md §4); lenient: also MSAL Python's
  /// and Go's (CN first, NULL hash parameters, PrintableString or UTF8String DC).
  platform::csr_profile csr_profile = platform::csr_profile::strict;
  /// How many recent requests GET /requests keeps (bounded ring).
  std::size_t request_log_size = 256;

  // --- the token listener's TLS (tests of client authentication per version and scheme) ---
  /// Highest TLS version the token listener speaks: "1.3" (default) or "1.2".
  std::string token_tls_max_version = "1.3";
  /// The signature algorithms the token listener accepts for the client's CertificateVerify,
  /// in OpenSSL's list syntax ("rsa_pkcs1_sha256", "rsa_pss_rsae_sha256:rsa_pss_pss_sha256");
  /// empty: OpenSSL's defaults. The listener refuses to start on a list OpenSSL rejects.
  std::string token_client_sigalgs;

  // --- TPM key attestation (POST /attest/tpm/*; off while tpm_ek_ca is empty) ---
  /// PEM file of the CA certificates trusted to issue EK certificates (swtpm: its local CA's
  /// root and issuing certificate). Every certificate in it is a trust anchor.
  std::string tpm_ek_ca;
  /// How long a TPM challenge can be answered.
  std::chrono::seconds tpm_challenge_lifetime{300};
  /// Most TPM challenges pending at once (more are refused with 503 until some expire).
  int tpm_max_challenges = 1024;

  // --- faults per endpoint name ---
  std::map<std::string, fault_spec> faults;
};

/// Parses a config JSON document over the defaults; the error names the member and what is
/// wrong with it ("threads: must be an integer from 1 to 64").
result<config> parse_config(std::string_view json, config base = {});
/// Parses one fault spec object (admin API and config share it).
result<fault_spec> parse_fault_spec(std::string_view json);
/// Checks cross-field rules (GUIDs, loopback bind address, distinct identities, positive
/// lifetimes); the error names the member.
result<void> validate_config(const config& c);

} // namespace msiv2::sim
