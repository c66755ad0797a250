#include <boost/test/unit_test.hpp>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include <optional>

#include "platform/binding.hpp"
#include "platform/csr.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"
#include "platform/tpm_key.hpp"
#include "platform/tpm_provider.hpp"
#include "platform/x509.hpp"
#include "tests/support/swtpm.hpp"
#include "tests/support/test_keys.hpp"

using namespace msiv2::platform;
using msiv2::test::contains;
using msiv2::test::error_text;
using msiv2::test::swtpm;

namespace {

// One binding key for the suite (TPM key generation costs real time).
const tpm_key_blob& suite_blob() {
  static std::optional<tpm_key_blob> blob;
  if (!blob) {
    auto made = create_tpm_binding_key(swtpm::shared().config());
    BOOST_REQUIRE_MESSAGE(made.ok(), error_text(made));
    blob = *made;
  }
  return *blob;
}

pkey_ptr suite_pkey() {
  auto key = tpm_pkey(swtpm::shared().config(), suite_blob());
  BOOST_REQUIRE_MESSAGE(key.ok(), error_text(key));
  return std::move(*key);
}

// The public key built in software from the blob's modulus alone: what every SPKI must equal.
std::string spki_from_blob(const tpm_key_blob& blob) {
  auto pub = tpm_key_public(blob);
  BOOST_REQUIRE_MESSAGE(pub.ok(), error_text(pub));
  bn_ptr n(BN_bin2bn(reinterpret_cast<const unsigned char*>(pub->modulus.data()),
                     static_cast<int>(pub->modulus.size()), nullptr));
  bn_ptr e(BN_new());
  BN_set_word(e.get(), pub->exponent);
  std::unique_ptr<OSSL_PARAM_BLD, ossl_deleter<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>> bld(
    OSSL_PARAM_BLD_new());
  OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
  OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
  std::unique_ptr<OSSL_PARAM, ossl_deleter<OSSL_PARAM, OSSL_PARAM_free>> params(
    OSSL_PARAM_BLD_to_param(bld.get()));
  pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", "provider=default"));
  EVP_PKEY* raw = nullptr;
  BOOST_REQUIRE(EVP_PKEY_fromdata_init(ctx.get()) == 1);
  BOOST_REQUIRE(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) == 1);
  pkey_ptr key(raw);
  unsigned char* der = nullptr;
  int len = i2d_PUBKEY(key.get(), &der);
  BOOST_REQUIRE(len > 0);
  std::string out(reinterpret_cast<char*>(der), std::size_t(len));
  OPENSSL_free(der);
  return out;
}

// An independent PSS verification (software, default provider) that pins the salt length.
bool verify_pss(EVP_PKEY* pub, std::string_view data, std::string_view sig, int salt) {
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = EVP_DigestVerifyInit_ex(ctx.get(), &pctx, "SHA256", nullptr, "provider=default", pub,
                                    nullptr)
              == 1
            && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, salt) == 1
            && EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()),
                                sig.size(), reinterpret_cast<const unsigned char*>(data.data()),
                                data.size())
                 == 1;
  ERR_clear_error();
  return ok;
}

pkey_ptr software_twin(EVP_PKEY* key) {
  auto soft = software_public_key(key);
  BOOST_REQUIRE_MESSAGE(soft.ok(), error_text(soft));
  return std::move(*soft);
}

// Clears the TPM's owner hierarchy (what tpm2_clear does): new owner seed, keys under the old
// SRK no longer load.
void clear_tpm(const tpm_config& cfg) {
  auto r = run_tpm_void(cfg, "clear", [](tpm_connection& tpm) -> msiv2::result<void> {
    if (auto rc = Esys_Clear(tpm.esys(), ESYS_TR_RH_LOCKOUT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                             ESYS_TR_NONE);
        rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_Clear");
    return msiv2::ok();
  });
  BOOST_REQUIRE_MESSAGE(r.ok(), error_text(r));
}

// --- an in-process TLS server over a memory BIO pair ---------------------------------------

struct tls_pki {
  pkey_ptr ca_key, server_key;
  x509_ptr ca, server, client;
};

x509_ptr parse(const std::string& der) {
  auto c = parse_certificate(der);
  BOOST_REQUIRE_MESSAGE(c.ok(), error_text(c));
  return std::move(*c);
}

tls_pki make_pki(EVP_PKEY* client_key) {
  tls_pki p;
  p.ca_key.reset(EVP_PKEY_dup(msiv2::test::test_key()));
  p.server_key.reset(EVP_PKEY_dup(msiv2::test::other_key()));
  issue_params ca;
  ca.subject_key = p.ca_key.get();
  ca.subject_cn = "msiv2 test CA";
  ca.not_before = 0;
  ca.not_after = 4102444800;
  ca.is_ca = true;
  auto ca_der = issue_certificate(ca, nullptr, p.ca_key.get());
  BOOST_REQUIRE_MESSAGE(ca_der.ok(), error_text(ca_der));
  p.ca = parse(*ca_der);
  issue_params server;
  server.subject_key = p.server_key.get();
  server.subject_cn = "127.0.0.1";
  server.not_before = 0;
  server.not_after = 4102444800;
  server.server_auth = true;
  server.ip_addresses = {"127.0.0.1"};
  p.server = parse(*issue_certificate(server, p.ca.get(), p.ca_key.get()));
  // The client certificate certifies the TPM key's public half.
  auto twin = software_twin(client_key);
  issue_params client;
  client.subject_key = twin.get();
  client.subject_cn = "tpm client";
  client.not_before = 0;
  client.not_after = 4102444800;
  client.client_auth = true;
  p.client = parse(*issue_certificate(client, p.ca.get(), p.ca_key.get()));
  return p;
}

struct handshake_result {
  bool ok = false;
  std::string error;
  int peer_signature_type = NID_undef; // what the server saw the client sign with
  int peer_signature_md = NID_undef;
  std::string version;
};

// Runs one mutual-TLS handshake between a client using `client_key` and a server requiring a
// client certificate, both in this thread over a BIO pair.
handshake_result handshake(const tls_pki& pki, EVP_PKEY* client_key, int version,
                           const char* client_sigalgs) {
  handshake_result out;
  ssl_ctx_ptr sctx(SSL_CTX_new(TLS_server_method()));
  ssl_ctx_ptr cctx(SSL_CTX_new(TLS_client_method()));
  BOOST_REQUIRE(sctx && cctx);
  for (auto* ctx : {sctx.get(), cctx.get()}) {
    SSL_CTX_set_min_proto_version(ctx, version);
    SSL_CTX_set_max_proto_version(ctx, version);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca.get());
  }
  BOOST_REQUIRE(SSL_CTX_use_certificate(sctx.get(), pki.server.get()) == 1);
  BOOST_REQUIRE(SSL_CTX_use_PrivateKey(sctx.get(), pki.server_key.get()) == 1);
  SSL_CTX_set_verify(sctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_PEER, nullptr);
  BOOST_REQUIRE(SSL_CTX_use_certificate(cctx.get(), pki.client.get()) == 1);
  if (SSL_CTX_use_PrivateKey(cctx.get(), client_key) != 1 || SSL_CTX_check_private_key(cctx.get()) != 1) {
    out.error = drain_openssl_errors("client key");
    return out;
  }
  if (client_sigalgs != nullptr)
    BOOST_REQUIRE(SSL_CTX_set1_client_sigalgs_list(cctx.get(), client_sigalgs) == 1);
  std::unique_ptr<SSL, ossl_deleter<SSL, SSL_free>> server(SSL_new(sctx.get()));
  std::unique_ptr<SSL, ossl_deleter<SSL, SSL_free>> client(SSL_new(cctx.get()));
  BIO* cb = nullptr;
  BIO* sb = nullptr;
  BOOST_REQUIRE(BIO_new_bio_pair(&cb, 0, &sb, 0) == 1);
  SSL_set_bio(client.get(), cb, cb);
  SSL_set_bio(server.get(), sb, sb);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());
  SSL_set1_host(client.get(), "127.0.0.1");
  bool client_done = false, server_done = false;
  for (int round = 0; round < 50 && !(client_done && server_done); ++round) {
    if (!client_done) {
      int r = SSL_do_handshake(client.get());
      if (r == 1)
        client_done = true;
      else if (SSL_get_error(client.get(), r) != SSL_ERROR_WANT_READ) {
        out.error = drain_openssl_errors("client handshake");
        return out;
      }
    }
    if (!server_done) {
      int r = SSL_do_handshake(server.get());
      if (r == 1)
        server_done = true;
      else if (SSL_get_error(server.get(), r) != SSL_ERROR_WANT_READ) {
        out.error = drain_openssl_errors("server handshake");
        return out;
      }
    }
  }
  // TLS 1.3 servers read the client's Finished (and certificate) after their own handshake
  // call returned: a read settles it.
  char byte = 0;
  SSL_write(client.get(), "x", 1);
  if (SSL_read(server.get(), &byte, 1) != 1) {
    out.error = drain_openssl_errors("server read");
    return out;
  }
  out.ok = client_done && server_done && SSL_get_verify_result(server.get()) == X509_V_OK
           && SSL_get0_peer_certificate(server.get()) != nullptr;
  SSL_get_peer_signature_type_nid(server.get(), &out.peer_signature_type);
  SSL_get_peer_signature_nid(server.get(), &out.peer_signature_md);
  out.version = SSL_get_version(server.get());
  return out;
}

} // namespace

BOOST_AUTO_TEST_SUITE(platform_tpm_key_test)

BOOST_AUTO_TEST_CASE(the_tpm_makes_an_rsa_2048_sign_only_key_that_cannot_leave_it) {
  auto pub = tpm_key_public(suite_blob());
  BOOST_REQUIRE_MESSAGE(pub.ok(), error_text(pub));
  BOOST_TEST(pub->modulus.size() == 256u);
  BOOST_TEST(pub->exponent == 65537u);
  // fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|sign, no decrypt/restricted.
  BOOST_TEST(pub->attributes == 0x00040472u);
  BOOST_TEST(pub->name.size() == 34u);
  BOOST_TEST(hex_lower(pub->name.substr(0, 2)) == "000b");
}

BOOST_AUTO_TEST_CASE(a_key_blob_file_round_trips_and_a_damaged_one_is_named) {
  const auto& blob = suite_blob();
  auto text = encode_tpm_key_blob(blob);
  BOOST_TEST(contains(text, "msiv2-tpm-key-v1\n"));
  auto back = decode_tpm_key_blob(text);
  BOOST_REQUIRE_MESSAGE(back.ok(), error_text(back));
  BOOST_TEST(back->public_area == blob.public_area);
  BOOST_TEST(back->private_area == blob.private_area);

  BOOST_TEST(contains(decode_tpm_key_blob("-----BEGIN PRIVATE KEY-----\n").error(),
                      "not a TPM key blob"));
  BOOST_TEST(contains(decode_tpm_key_blob("msiv2-tpm-key-v1\nAAAA\n").error(),
                      "private area line is missing"));
  BOOST_TEST(contains(decode_tpm_key_blob("msiv2-tpm-key-v1\n!!!\nAAAA\n").error(),
                      "public area"));
  auto cut = text.substr(0, text.find('\n') + 12) + "\n" + base64_encode(blob.private_area) + "\n";
  BOOST_TEST(!decode_tpm_key_blob(cut).ok());
}

BOOST_AUTO_TEST_CASE(the_evp_pkey_is_an_rsa_key_of_our_provider_and_default_fetches_stay_default) {
  auto key = suite_pkey();
  BOOST_TEST(EVP_PKEY_is_a(key.get(), "RSA"));
  BOOST_TEST(is_tpm_pkey(key.get()));
  BOOST_TEST(EVP_PKEY_get_bits(key.get()) == 2048);
  BOOST_TEST(EVP_PKEY_get_size(key.get()) == 256);
  BOOST_TEST(!is_tpm_pkey(msiv2::test::test_key()));
  // Software keys and decoders still get the default provider's RSA.
  std::unique_ptr<EVP_KEYMGMT, ossl_deleter<EVP_KEYMGMT, EVP_KEYMGMT_free>> km(
    EVP_KEYMGMT_fetch(nullptr, "RSA", nullptr));
  BOOST_REQUIRE(km);
  BOOST_TEST(std::string(OSSL_PROVIDER_get0_name(EVP_KEYMGMT_get0_provider(km.get())))
             == "default");
  auto soft = generate_rsa_key(2048);
  BOOST_REQUIRE_MESSAGE(soft.ok(), error_text(soft));
  BOOST_TEST(!is_tpm_pkey(soft->get()));
}

BOOST_AUTO_TEST_CASE(the_key_names_its_tpm_and_blob_for_further_tpm_operations) {
  auto key = suite_pkey();
  auto ref = tpm_pkey_reference(key.get());
  BOOST_REQUIRE_MESSAGE(ref.ok(), error_text(ref));
  BOOST_TEST(ref->tpm.tcti == swtpm::shared().tcti());
  BOOST_TEST(ref->blob.public_area == suite_blob().public_area);
  BOOST_TEST(ref->blob.private_area == suite_blob().private_area);
  BOOST_TEST(!tpm_pkey_reference(msiv2::test::test_key()).ok());
  // load_tpm_key serves other operations on the key inside one connection.
  auto name = run_tpm<std::string>(swtpm::shared().config(), "read the name",
                                   [&](tpm_connection& tpm) -> msiv2::result<std::string> {
    auto loaded = load_tpm_key(tpm, ref->blob);
    if (!loaded)
      return loaded.fail();
    TPM2B_NAME* raw = nullptr;
    if (auto rc = Esys_TR_GetName(tpm.esys(), loaded->key.get(), &raw); rc != TSS2_RC_SUCCESS)
      return tpm.failed(rc, "Esys_TR_GetName");
    esys_ptr<TPM2B_NAME> n(raw);
    return std::string(reinterpret_cast<const char*>(n->name), n->size);
  });
  BOOST_REQUIRE_MESSAGE(name.ok(), error_text(name));
  BOOST_TEST(hex_lower(*name) == hex_lower(tpm_key_public(suite_blob())->name));
}

BOOST_AUTO_TEST_CASE(private_key_export_is_refused_in_every_form) {
  auto key = suite_pkey();
  OSSL_PARAM* params = nullptr;
  BOOST_TEST(EVP_PKEY_todata(key.get(), EVP_PKEY_KEYPAIR, &params) != 1);
  OSSL_PARAM_free(params);
  unsigned char* der = nullptr;
  BOOST_TEST(i2d_PrivateKey(key.get(), &der) <= 0);
  OPENSSL_free(der);
  bio_ptr bio(BIO_new(BIO_s_mem()));
  BOOST_TEST(PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr)
             != 1);
  BOOST_TEST(BIO_pending(bio.get()) == 0);
  auto pem = private_key_pem(key.get());
  BOOST_TEST(!pem.ok());
  ERR_clear_error();
  // The public half is as readable as any key's.
  auto spki = public_key_der(key.get());
  BOOST_REQUIRE_MESSAGE(spki.ok(), error_text(spki));
  BOOST_TEST(*spki == spki_from_blob(suite_blob()));
}

BOOST_AUTO_TEST_CASE(pss_signatures_have_salt_32_and_verify_in_software) {
  auto key = suite_pkey();
  auto twin = software_twin(key.get());
  auto sig = sign_pss_sha256(key.get(), "data to sign");
  BOOST_REQUIRE_MESSAGE(sig.ok(), error_text(sig));
  BOOST_TEST(sig->size() == 256u);
  BOOST_TEST(verify_pss(twin.get(), "data to sign", *sig, 32));
  BOOST_TEST(!verify_pss(twin.get(), "data to sign", *sig, 20));
  BOOST_TEST(!verify_pss(twin.get(), "other data", *sig, 32));
  BOOST_TEST(verify_pss_sha256(key.get(), "data to sign", *sig));
}

BOOST_AUTO_TEST_CASE(pkcs1_v15_signatures_verify_in_software) {
  auto key = suite_pkey();
  auto twin = software_twin(key.get());
  auto sig = sign_rs256(key.get(), "jwt header.payload");
  BOOST_REQUIRE_MESSAGE(sig.ok(), error_text(sig));
  BOOST_TEST(verify_rs256(twin.get(), "jwt header.payload", *sig));
}

BOOST_AUTO_TEST_CASE(a_pss_salt_other_than_the_digest_length_is_refused_by_name) {
  auto key = suite_pkey();
  md_ctx_ptr ctx{EVP_MD_CTX_new()};
  EVP_PKEY_CTX* pctx = nullptr;
  BOOST_REQUIRE(EVP_DigestSignInit_ex(ctx.get(), &pctx, "SHA256", nullptr, nullptr, key.get(),
                                      nullptr)
                == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
  BOOST_REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 20) == 1);
  unsigned char sig[256];
  size_t len = sizeof sig;
  BOOST_TEST(EVP_DigestSign(ctx.get(), sig, &len, reinterpret_cast<const unsigned char*>("x"), 1)
             != 1);
  auto why = drain_openssl_errors("sign");
  BOOST_TEST(contains(why, "salt as long as the digest"), why);
}

BOOST_AUTO_TEST_CASE(the_csr_signed_in_the_tpm_is_byte_for_byte_the_spec_csr_of_its_key) {
  auto key = suite_pkey();
  const std::string client = "11111111-2222-3333-4444-555555555555";
  const std::string tenant = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
  const std::string cuid = R"({"vmId":"0f9c6bfa-4d4d-4b5d-9c3c-6d1d2c3b4a59"})";
  auto csr = build_csr(key.get(), client, tenant, cuid);
  BOOST_REQUIRE_MESSAGE(csr.ok(), error_text(csr));
  auto parsed = parse_csr(*csr);
  BOOST_REQUIRE_MESSAGE(parsed.ok(), error_text(parsed));
  BOOST_TEST(parsed->spki_der == spki_from_blob(suite_blob()));
  auto info = csr_info_der(csr_subject_der(client, tenant), spki_from_blob(suite_blob()),
                           csr_attributes_der(cuid));
  BOOST_TEST(parsed->info_der == info);
  BOOST_TEST(*csr == assemble_csr(info, pss_sha256_algorithm_der(), parsed->signature));
  auto twin = software_twin(key.get());
  BOOST_TEST(verify_pss(twin.get(), info, parsed->signature, 32));
  // OpenSSL's own parser accepts it too.
  auto p = reinterpret_cast<const unsigned char*>(csr->data());
  x509_req_ptr req{d2i_X509_REQ(nullptr, &p, long(csr->size()))};
  BOOST_REQUIRE(req);
  BOOST_TEST(X509_REQ_verify(req.get(), twin.get()) == 1);
  ERR_clear_error();
}

BOOST_AUTO_TEST_CASE(mtls_tls13_client_auth_signs_rsa_pss_in_the_tpm) {
  auto key = suite_pkey();
  auto pki = make_pki(key.get());
  auto r = handshake(pki, key.get(), TLS1_3_VERSION, nullptr);
  BOOST_TEST(r.ok, r.error);
  BOOST_TEST(r.version == "TLSv1.3");
  BOOST_TEST(r.peer_signature_type == NID_rsassaPss);
}

BOOST_AUTO_TEST_CASE(mtls_tls12_client_auth_with_rsa_pkcs1_sha256_and_rsa_pss_rsae_sha256) {
  auto key = suite_pkey();
  auto pki = make_pki(key.get());
  auto pkcs1 = handshake(pki, key.get(), TLS1_2_VERSION, "rsa_pkcs1_sha256");
  BOOST_TEST(pkcs1.ok, pkcs1.error);
  BOOST_TEST(pkcs1.version == "TLSv1.2");
  BOOST_TEST(pkcs1.peer_signature_type == NID_rsaEncryption);
  BOOST_TEST(pkcs1.peer_signature_md == NID_sha256);
  auto pss = handshake(pki, key.get(), TLS1_2_VERSION, "rsa_pss_rsae_sha256");
  BOOST_TEST(pss.ok, pss.error);
  BOOST_TEST(pss.peer_signature_type == NID_rsassaPss);
  BOOST_TEST(pss.peer_signature_md == NID_sha256);
}

BOOST_AUTO_TEST_CASE(a_certificate_of_another_key_does_not_match_the_tpm_key) {
  auto key = suite_pkey();
  auto pki = make_pki(msiv2::test::other_key());
  ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
  BOOST_REQUIRE(SSL_CTX_use_certificate(ctx.get(), pki.client.get()) == 1);
  BOOST_TEST(SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1);
  ERR_clear_error();
}

BOOST_AUTO_TEST_CASE(the_key_signs_again_after_a_graceful_tpm_restart_and_after_sigkill) {
  auto& tpm = swtpm::shared();
  auto key = suite_pkey();
  auto twin = software_twin(key.get());
  tpm.restart();
  auto a = sign_pss_sha256(key.get(), "after restart");
  BOOST_REQUIRE_MESSAGE(a.ok(), error_text(a));
  BOOST_TEST(verify_pss(twin.get(), "after restart", *a, 32));
  tpm.kill_and_restart();
  auto b = sign_pss_sha256(key.get(), "after sigkill");
  BOOST_REQUIRE_MESSAGE(b.ok(), error_text(b));
  BOOST_TEST(verify_pss(twin.get(), "after sigkill", *b, 32));
  BOOST_TEST(check_tpm_key_loads(tpm.config(), suite_blob()).ok());
}

BOOST_AUTO_TEST_CASE(a_signature_while_the_tpm_is_down_fails_naming_the_tcti) {
  auto& tpm = swtpm::shared();
  auto cfg = tpm.config();
  cfg.attempts = 2;
  auto key = tpm_pkey(cfg, suite_blob());
  BOOST_REQUIRE(key.ok());
  tpm.stop();
  auto sig = sign_pss_sha256(key->get(), "down");
  tpm.start();
  BOOST_REQUIRE(!sig.ok());
  BOOST_TEST(contains(sig.error(), tpm.tcti()), sig.error());
  // A TPM that could not be reached refused nothing: the key stays usable, and signs again.
  BOOST_TEST(!tpm_pkey_refused(key->get()));
  BOOST_TEST(sign_pss_sha256(key->get(), "up again").ok());
  BOOST_TEST(!tpm_pkey_refused(key->get()));
}

// Last: it clears the suite's TPM.
BOOST_AUTO_TEST_CASE(after_the_owner_seed_is_cleared_the_key_no_longer_loads) {
  auto& tpm = swtpm::shared();
  BOOST_REQUIRE(check_tpm_key_loads(tpm.config(), suite_blob()).ok());
  clear_tpm(tpm.config());
  auto r = check_tpm_key_loads(tpm.config(), suite_blob());
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(contains(r.error(), "Esys_Load(binding key)"), r.error());
  BOOST_TEST(contains(r.error(), "the TPM was cleared or replaced"), r.error());
  // A key object made before the clear: its next signature is the load check. The TPM's
  // refusal marks it (and what shares its key data) as never signing again.
  auto key = suite_pkey();
  auto copy = pkey_ptr(EVP_PKEY_dup(key.get())); // the provider's own duplicate of its key data
  BOOST_REQUIRE(copy);
  BOOST_TEST(!tpm_pkey_refused(key.get()));
  auto sig = sign_pss_sha256(key.get(), "x");
  BOOST_REQUIRE(!sig.ok());
  BOOST_TEST(contains(error_text(sig), "the TPM was cleared or replaced"), error_text(sig));
  BOOST_TEST(tpm_pkey_refused(key.get()));
  BOOST_TEST(tpm_pkey_refused(copy.get()));
  BOOST_TEST(msiv2::binding_key(std::move(copy), "id").unusable());
  // A software key is never unusable.
  auto soft = generate_rsa_key(2048);
  BOOST_REQUIRE(soft.ok());
  BOOST_TEST(!tpm_pkey_refused(soft->get()));
  BOOST_TEST(!msiv2::binding_key(std::move(*soft), "id").unusable());
  ERR_clear_error();
}

BOOST_AUTO_TEST_SUITE_END()
