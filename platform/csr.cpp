#include "platform/csr.hpp"

#include <vector>

#include "platform/der.hpp"
#include "platform/encoding.hpp"
#include "platform/keys.hpp"

namespace msiv2::platform {

namespace {

constexpr std::string_view rsassa_pss_oid = "1.2.840.113549.1.1.10";
constexpr std::string_view rsa_encryption_oid = "1.2.840.113549.1.1.1";
constexpr std::string_view mgf1_oid = "1.2.840.113549.1.1.8";
constexpr std::string_view sha256_oid = "2.16.840.1.101.3.4.2.1";
constexpr std::string_view extension_request_oid = "1.2.840.113549.1.9.14";

bool is_printable_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' '
         || c == '\'' || c == '(' || c == ')' || c == '+' || c == ',' || c == '-' || c == '.'
         || c == '/' || c == ':' || c == '=' || c == '?';
}

bool is_printable(std::string_view s) {
  for (char c : s)
    if (!is_printable_char(c))
      return false;
  return true;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (std::uint8_t(c) >= 0x80)
      return false;
  return true;
}

std::string short_name(std::string_view dotted) {
  if (dotted == dc_oid)
    return "DC";
  if (dotted == cn_oid)
    return "CN";
  return std::string(dotted);
}

// Reads the next TLV as an OBJECT IDENTIFIER and returns its dotted text.
result<std::string> read_oid(der::reader& r, std::string_view what) {
  auto n = r.expect(der::object_identifier, what);
  if (!n)
    return n.fail();
  auto dotted = der::decode_oid(n->content);
  if (!dotted)
    return fail(std::string(what) + ": " + dotted.error());
  return dotted;
}

// `in` holds exactly one AlgorithmIdentifier that must be SHA-256 with absent parameters
// (or NULL ones, when `null_allowed`).
result<void> check_sha256_identifier(std::string_view in, std::string_view what,
                                     bool null_allowed) {
  der::reader r(in);
  auto id = r.expect(der::sequence, what);
  if (!id)
    return id.fail();
  if (!r.done())
    return fail(std::string(what) + " has elements after the AlgorithmIdentifier");
  der::reader body(id->content);
  auto dotted = read_oid(body, what);
  if (!dotted)
    return dotted.fail();
  if (*dotted != sha256_oid)
    return fail(std::string(what) + " must be SHA-256 (" + std::string(sha256_oid) + "), found "
                + *dotted);
  if (!body.done()) {
    auto params = body.next();
    if (null_allowed && params.ok() && params->tag == der::null && params->content.empty() &&
        body.done())
      return ok();
    if (params.ok() && params->tag == der::null)
      return fail("CSR signature algorithm parameters must not contain NULL hash parameters");
    return fail(std::string(what) + " must have absent parameters");
  }
  return ok();
}

result<void> check_pss_parameters(std::string_view params_content, bool null_allowed) {
  der::reader r(params_content);
  int last_tag = -1;
  bool saw_hash = false;
  bool saw_mgf = false;
  bool saw_salt = false;
  while (!r.done()) {
    auto n = r.next();
    if (!n)
      return fail("CSR signature algorithm parameters: " + n.error());
    if (int(n->tag) <= last_tag)
      return fail("CSR signature algorithm parameters are out of order or repeated");
    last_tag = n->tag;
    switch (n->tag) {
    case der::context_0: {
      auto hash = check_sha256_identifier(n->content, "CSR signature hash", null_allowed);
      if (!hash)
        return hash;
      saw_hash = true;
      break;
    }
    case der::context_1: {
      der::reader outer(n->content);
      auto mgf = outer.expect(der::sequence, "CSR signature mask generation function");
      if (!mgf)
        return mgf.fail();
      if (!outer.done())
        return fail("CSR signature mask generation function has extra elements");
      der::reader body(mgf->content);
      auto dotted = read_oid(body, "CSR signature mask generation function");
      if (!dotted)
        return dotted.fail();
      if (*dotted != mgf1_oid)
        return fail("CSR signature mask generation function must be MGF1 ("
                    + std::string(mgf1_oid) + "), found " + *dotted);
      if (body.done())
        return fail("CSR signature MGF1 must name its hash");
      auto hash_id = body.next();
      if (!hash_id)
        return fail("CSR signature MGF1 hash: " + hash_id.error());
      if (!body.done())
        return fail("CSR signature MGF1 has elements after its hash");
      auto hash = check_sha256_identifier(hash_id->whole, "CSR signature MGF1 hash", null_allowed);
      if (!hash)
        return hash;
      saw_mgf = true;
      break;
    }
    case der::context_2: {
      der::reader inner(n->content);
      auto salt = inner.expect(der::integer, "CSR signature salt length");
      if (!salt)
        return salt.fail();
      if (!inner.done() || salt->content != std::string_view("\x20", 1))
        return fail("CSR signature salt length must be 32");
      saw_salt = true;
      break;
    }
    case der::context_3:
      return fail("CSR signature algorithm must not spell out trailerField");
    default:
      return fail("CSR signature algorithm parameters have an unexpected element");
    }
  }
  if (!saw_hash)
    return fail("CSR signature algorithm must name the SHA-256 hash (the default is SHA-1)");
  if (!saw_mgf)
    return fail("CSR signature algorithm must name MGF1 with SHA-256 (the default is SHA-1)");
  if (!saw_salt)
    return fail("CSR signature salt length must be 32 (the default is 20)");
  return ok();
}

} // namespace

std::string cu_id_json(const cu_id& id) {
  std::string out = "{";
  if (!id.vm_id.empty())
    out += "\"vmId\":" + json_quote(id.vm_id);
  if (!id.vmss_id.empty()) {
    if (out.size() > 1)
      out += ',';
    out += "\"vmssId\":" + json_quote(id.vmss_id);
  }
  out += '}';
  return out;
}

std::string csr_subject_der(std::string_view client_id, std::string_view tenant_id) {
  auto cn_tag = is_printable(client_id) ? der::printable_string : der::utf8_string;
  auto dc = der::set_of({der::seq({der::oid(dc_oid), der::tlv(der::ia5_string, tenant_id)})});
  auto cn = der::set_of({der::seq({der::oid(cn_oid), der::tlv(cn_tag, client_id)})});
  return der::seq({dc, cn});
}

std::string csr_attributes_der(std::string_view cuid_json) {
  auto attribute = der::seq(
    {der::oid(cuid_attribute_oid), der::set_of({der::tlv(der::utf8_string, cuid_json)})});
  return der::tlv(der::context_0, attribute);
}

std::string csr_info_der(std::string_view subject_der, std::string_view spki_der,
                         std::string_view attributes_der) {
  return der::seq({der::small_integer(0), subject_der, spki_der, attributes_der});
}

std::string pss_sha256_algorithm_der() {
  auto sha256_id = der::seq({der::oid(sha256_oid)}); // parameters absent, not NULL
  auto params = der::seq({
    der::tlv(der::context_0, sha256_id),
    der::tlv(der::context_1, der::seq({der::oid(mgf1_oid), sha256_id})),
    der::tlv(der::context_2, der::small_integer(32)),
    // trailerField left out: IMDS rejects it spelled out (protocol.md §4)
  });
  return der::seq({der::oid(rsassa_pss_oid), params});
}

std::string assemble_csr(std::string_view info_der, std::string_view algorithm_der,
                         std::string_view signature) {
  return der::seq({info_der, algorithm_der, der::bit_string_of(signature)});
}

namespace {

result<void> check_csr_arguments(EVP_PKEY* key, std::string_view client_id,
                                 std::string_view tenant_id, std::string_view cuid_json) {
  if (key == nullptr)
    return fail("build_csr: no key");
  if (client_id.empty())
    return fail("build_csr: client id is empty");
  if (tenant_id.empty())
    return fail("build_csr: tenant id is empty");
  if (!is_ascii(tenant_id))
    return fail("build_csr: tenant id is not ASCII, so it cannot be an IA5String DC");
  if (cuid_json.empty())
    return fail("build_csr: cuId JSON is empty");
  return ok();
}

result<parsed_csr> parse_csr_checked(std::string_view in, csr_profile profile, bool decode_key);

} // namespace

result<std::string> build_csr(EVP_PKEY* key, std::string_view client_id,
                              std::string_view tenant_id, std::string_view cuid_json) {
  if (auto ok = check_csr_arguments(key, client_id, tenant_id, cuid_json); !ok)
    return fail(ok.error());
  auto spki = public_key_der(key);
  if (!spki)
    return fail("build_csr: " + spki.error());
  auto pub = prepare_csr_public_key(std::move(*spki));
  if (!pub)
    return fail("build_csr: " + pub.error());
  return build_csr(key, **pub, client_id, tenant_id, cuid_json);
}

result<std::shared_ptr<const csr_public_key>> prepare_csr_public_key(std::string spki_der) {
  auto key = public_key_from_der(spki_der);
  if (!key)
    return fail("the binding key's public key: " + key.error());
  auto out = std::make_shared<csr_public_key>();
  out->spki_der = std::move(spki_der);
  out->key = std::move(*key);
  return std::shared_ptr<const csr_public_key>(std::move(out));
}

result<std::string> build_csr(EVP_PKEY* key, const csr_public_key& pub,
                              std::string_view client_id, std::string_view tenant_id,
                              std::string_view cuid_json) {
  if (auto ok = check_csr_arguments(key, client_id, tenant_id, cuid_json); !ok)
    return fail(ok.error());
  if (!pub.key)
    return fail("build_csr: the public key is not prepared");
  auto info = csr_info_der(csr_subject_der(client_id, tenant_id), pub.spki_der,
                           csr_attributes_der(cuid_json));
  auto signature = sign_pss_sha256(key, info);
  if (!signature)
    return fail("build_csr: " + signature.error());
  auto csr = assemble_csr(info, pss_sha256_algorithm_der(), *signature);
  // A broken signer (hardware, provider) must be caught here, not by IMDS: every structural
  // rule, then the signature against the prepared public key (the one the CSR carries).
  auto parsed = parse_csr_checked(csr, csr_profile::strict, false);
  if (!parsed)
    return fail("build_csr produced a CSR that fails its own checks: " + parsed.error());
  if (parsed->spki_der != pub.spki_der)
    return fail("build_csr produced a CSR that does not carry the binding key's public key");
  if (!verify_pss_sha256(pub.key.get(), parsed->info_der, parsed->signature))
    return fail("build_csr: the CSR's signature does not verify with the binding key's public "
                "key (the signer and the key store disagree)");
  return csr;
}

result<parsed_csr> parse_csr(std::string_view in, csr_profile profile) {
  return parse_csr_checked(in, profile, true);
}

namespace {

result<parsed_csr> parse_csr_checked(std::string_view in, csr_profile profile,
                                     bool decode_key) {
  const bool lenient = profile == csr_profile::lenient;
  der::reader top(in);
  auto request = top.expect(der::sequence, "CSR");
  if (!request)
    return request.fail();
  if (!top.done())
    return fail("CSR has trailing bytes after the request");

  der::reader body(request->content);
  auto info = body.expect(der::sequence, "CSR certificationRequestInfo");
  if (!info)
    return info.fail();
  auto algorithm = body.expect(der::sequence, "CSR signature algorithm");
  if (!algorithm)
    return algorithm.fail();
  auto signature = body.expect(der::bit_string, "CSR signature");
  if (!signature)
    return signature.fail();
  if (!body.done())
    return fail("CSR has elements after the signature");

  parsed_csr out;
  out.info_der = std::string(info->whole);

  // --- certificationRequestInfo ---
  der::reader ri(info->content);
  auto version = ri.expect(der::integer, "CSR version");
  if (!version)
    return version.fail();
  if (version->content != std::string_view("\0", 1))
    return fail("CSR version must be 0");

  auto subject = ri.expect(der::sequence, "CSR subject");
  if (!subject)
    return subject.fail();
  struct name_entry {
    std::string type;
    der::node value;
  };
  std::vector<name_entry> entries;
  der::reader rdns(subject->content);
  while (!rdns.done()) {
    auto rdn = rdns.expect(der::set, "CSR subject RDN");
    if (!rdn)
      return rdn.fail();
    der::reader in_rdn(rdn->content);
    auto atv = in_rdn.expect(der::sequence, "CSR subject attribute");
    if (!atv)
      return atv.fail();
    if (!in_rdn.done())
      return fail("CSR subject RDNs must hold exactly one attribute each");
    der::reader in_atv(atv->content);
    auto type = read_oid(in_atv, "CSR subject attribute type");
    if (!type)
      return type.fail();
    auto value = in_atv.next();
    if (!value)
      return fail("CSR subject attribute value: " + value.error());
    if (!in_atv.done())
      return fail("CSR subject attribute has elements after its value");
    entries.push_back({std::move(*type), *value});
  }
  if (lenient && entries.size() == 2 && entries[0].type == cn_oid && entries[1].type == dc_oid)
    std::swap(entries[0], entries[1]); // CN first: MSAL Python and Go
  if (entries.size() != 2 || entries[0].type != dc_oid || entries[1].type != cn_oid) {
    std::string found;
    for (const auto& e : entries)
      found += (found.empty() ? "" : ", ") + short_name(e.type);
    return fail("CSR subject must be DC then CN (found " + (found.empty() ? "nothing" : found)
                + ")");
  }
  const auto& dc = entries[0].value;
  if (lenient && dc.tag == der::printable_string) {
    if (!is_printable(dc.content))
      return fail("CSR subject DC is a PrintableString holding a character outside that set");
  } else if (lenient && dc.tag == der::utf8_string) {
    // MSAL Python's fallback; a tenant id is ASCII anyway.
  } else if (dc.tag != der::ia5_string || !is_ascii(dc.content)) {
    return fail(lenient ? "CSR subject DC must be an IA5String, PrintableString or UTF8String"
                        : "CSR subject DC must be an IA5String");
  }
  if (dc.content.empty())
    return fail("CSR subject DC (tenant id) is empty");
  const auto& cn = entries[1].value;
  if (cn.tag != der::printable_string && cn.tag != der::utf8_string)
    return fail("CSR subject CN must be a PrintableString or UTF8String");
  if (cn.tag == der::printable_string && !is_printable(cn.content))
    return fail("CSR subject CN is a PrintableString holding a character outside that set");
  if (cn.content.empty())
    return fail("CSR subject CN (client id) is empty");
  out.tenant_id = std::string(dc.content);
  out.client_id = std::string(cn.content);

  auto spki = ri.expect(der::sequence, "CSR subjectPublicKeyInfo");
  if (!spki)
    return spki.fail();
  {
    der::reader rs(spki->content);
    auto alg = rs.expect(der::sequence, "CSR public key algorithm");
    if (!alg)
      return alg.fail();
    der::reader ra(alg->content);
    auto type = read_oid(ra, "CSR public key algorithm");
    if (!type)
      return type.fail();
    if (*type != rsa_encryption_oid)
      return fail("CSR public key must be rsaEncryption (" + std::string(rsa_encryption_oid)
                  + "), found " + *type);
    auto params = ra.next();
    if (!params || params->tag != der::null || !params->content.empty() || !ra.done())
      return fail("CSR public key algorithm rsaEncryption must have NULL parameters");
    if (decode_key) {
      auto key = public_key_from_der(spki->whole);
      if (!key)
        return fail("CSR public key: " + key.error());
    }
  }
  out.spki_der = std::string(spki->whole);

  if (ri.done())
    return fail("CSR must have exactly one attribute (cuId)");
  auto attributes = ri.expect(der::context_0, "CSR attributes [0]");
  if (!attributes)
    return attributes.fail();
  if (!ri.done())
    return fail("CSR certificationRequestInfo has elements after the attributes");
  struct attribute {
    std::string type;
    std::string_view values;
  };
  std::vector<attribute> attrs;
  der::reader rattrs(attributes->content);
  while (!rattrs.done()) {
    auto a = rattrs.expect(der::sequence, "CSR attribute");
    if (!a)
      return a.fail();
    der::reader ra(a->content);
    auto type = read_oid(ra, "CSR attribute type");
    if (!type)
      return type.fail();
    auto values = ra.expect(der::set, "CSR attribute values");
    if (!values)
      return values.fail();
    if (!ra.done())
      return fail("CSR attribute has elements after its values");
    attrs.push_back({std::move(*type), values->content});
  }
  for (const auto& a : attrs)
    if (a.type == extension_request_oid)
      return fail("CSR must not carry extensions");
  if (attrs.size() != 1)
    return fail("CSR must have exactly one attribute (cuId)");
  if (attrs[0].type != cuid_attribute_oid)
    return fail("CSR attribute must be cuId (" + std::string(cuid_attribute_oid) + "), found "
                + attrs[0].type);
  der::reader rv(attrs[0].values);
  std::vector<der::node> values;
  while (!rv.done()) {
    auto v = rv.next();
    if (!v)
      return fail("CSR cuId attribute value: " + v.error());
    values.push_back(*v);
  }
  if (values.size() != 1)
    return fail("CSR cuId attribute must have exactly one value");
  if (values[0].tag != der::utf8_string)
    return fail("CSR cuId attribute value must be a UTF8String");
  if (values[0].content.empty())
    return fail("CSR cuId attribute value is empty");
  out.cuid_json = std::string(values[0].content);

  // --- signatureAlgorithm ---
  der::reader ralg(algorithm->content);
  auto alg_type = read_oid(ralg, "CSR signature algorithm");
  if (!alg_type)
    return alg_type.fail();
  if (*alg_type != rsassa_pss_oid)
    return fail("CSR signature algorithm must be RSASSA-PSS (" + std::string(rsassa_pss_oid)
                + "), found " + *alg_type);
  if (ralg.done())
    return fail("CSR signature algorithm must carry RSASSA-PSS parameters");
  auto params = ralg.expect(der::sequence, "CSR signature algorithm parameters");
  if (!params)
    return params.fail();
  if (!ralg.done())
    return fail("CSR signature algorithm has elements after the parameters");
  auto checked = check_pss_parameters(params->content, lenient);
  if (!checked)
    return checked.fail();
  // Every rule above passed; anything still different is an encoding we do not expect (the
  // lenient profile accepts the NULLs, which change the bytes).
  if (!lenient && algorithm->whole != pss_sha256_algorithm_der())
    return fail("CSR signature algorithm is not the exact RSASSA-PSS SHA-256/MGF1-SHA-256/salt-32 "
                "encoding");

  // --- signature ---
  if (signature->content.size() < 2 || signature->content[0] != '\0')
    return fail("CSR signature BIT STRING must be non-empty with 0 unused bits");
  out.signature = std::string(signature->content.substr(1));
  return out;
}

} // namespace

result<void> verify_csr_signature(const parsed_csr& csr) {
  auto key = public_key_from_der(csr.spki_der);
  if (!key)
    return fail("CSR public key: " + key.error());
  if (!verify_pss_sha256(key->get(), csr.info_der, csr.signature))
    return fail("CSR signature does not verify with the CSR's own public key");
  return ok();
}

} // namespace msiv2::platform
