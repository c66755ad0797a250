// msiv2-sim: `serve` runs the simulator until SIGINT/SIGTERM; `demo` walks through the
// whole flow (tools/demo.cpp). Bad arguments or configuration: one line on stderr, exit 2.

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "messages/version.hpp"
#include "tools/demo.hpp"
#include "tools/sim/config.hpp"
#include "tools/sim/server.hpp"

namespace {

using msiv2::result;
using msiv2::sim::config;

constexpr int exit_usage = 2;

const char* usage_text =
  "usage: msiv2-sim serve [options]    run the simulator until SIGINT or SIGTERM\n"
  "       msiv2-sim demo [options]     the simulator and a client walking through the flow\n"
  "       msiv2-sim --help | --version\n"
  "\n"
  "serve options (flags override the config file):\n"
  "  --config FILE              JSON config (members named like the fields of\n"
  "                             tools/sim/config.hpp, lifetimes in seconds)\n"
  "  --ready-file PATH          written atomically once listening: endpoints, CA file,\n"
  "                             tenant, identities, pid\n"
  "  --state-dir DIR            where ca.pem and other state go (default: a temp dir)\n"
  "  --imds-port N  --attestation-port N  --token-port N  --resource-port N  --admin-port N\n"
  "                             listener ports on 127.0.0.1 (0 = any free port, default)\n"
  "  --threads N                I/O threads (1-64, default 2)\n"
  "  --v1-only                  a host without IMDS v2 (404 on the v2 paths)\n"
  "  --attestation MODE         off | optional | required\n"
  "  --cert-lifetime S  --token-lifetime S  --attestation-lifetime S  --refresh-in S\n"
  "                             lifetimes in seconds\n"
  "  --token-not-after S        binding certificates carry token_not_after = issue time + S\n"
  "                             (less than --cert-lifetime); past it the token endpoint\n"
  "                             answers AADSTS1000901\n"
  "  --csr-profile P            strict (MSAL .NET's exact CSR encoding, the default) or\n"
  "                             lenient (also CN first, NULL PSS hash parameters, a\n"
  "                             PrintableString or UTF8String DC: MSAL Python and Go)\n"
  "  --tpm-ek-ca PEM            turn on TPM key attestation (POST /attest/tpm/challenge and\n"
  "                             /attest/tpm/proof): the CA certificates trusted to issue EK\n"
  "                             certificates (tools/swtpm.sh prints MSIV2_TPM_EK_CA)\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "msiv2-sim: %s (try msiv2-sim --help)\n", message.c_str());
  return exit_usage;
}

result<std::int64_t> parse_integer(std::string_view flag, const std::string& text,
                                   std::int64_t lo, std::int64_t hi) {
  std::int64_t value = 0;
  std::size_t used = 0;
  bool good = !text.empty() && (std::isdigit(static_cast<unsigned char>(text[0])) != 0);
  if (good) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    used = static_cast<std::size_t>(end - text.c_str());
    good = errno == 0 && used == text.size();
    value = v;
  }
  if (!good || value < lo || value > hi)
    return msiv2::fail(std::string(flag) + ": must be an integer from " + std::to_string(lo) +
                       " to " + std::to_string(hi) + ", got '" + text + "'");
  return value;
}

result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return msiv2::fail("--config " + path + ": cannot open: " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad())
    return msiv2::fail("--config " + path + ": cannot read");
  return s.str();
}

/// The serve flags, parsed and applied over the config file.
result<config> parse_serve_args(int argc, char** argv) {
  std::optional<std::string> config_file;
  // Flags are applied after the file is read, in order.
  std::vector<std::pair<std::string, std::string>> overrides;
  const std::string_view with_value[] = {
    "--config",        "--ready-file",       "--state-dir",     "--imds-port",
    "--attestation-port", "--token-port",    "--resource-port", "--admin-port",
    "--threads",       "--attestation",      "--cert-lifetime", "--token-lifetime",
    "--attestation-lifetime", "--refresh-in", "--token-not-after", "--csr-profile",
    "--tpm-ek-ca"};
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_inline = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline = true;
    }
    if (arg == "--v1-only") {
      if (has_inline)
        return msiv2::fail("--v1-only takes no value");
      overrides.emplace_back(arg, "");
      continue;
    }
    bool known = false;
    for (auto f : with_value)
      known = known || arg == f;
    if (!known)
      return msiv2::fail("unknown option '" + std::string(argv[i]) + "'");
    if (!has_inline) {
      if (i + 1 >= argc)
        return msiv2::fail(arg + " needs a value");
      value = argv[++i];
    }
    if (arg == "--config")
      config_file = value;
    else
      overrides.emplace_back(arg, value);
  }

  config cfg;
  if (config_file) {
    auto text = read_file(*config_file);
    if (!text)
      return text.fail();
    auto parsed = msiv2::sim::parse_config(*text);
    if (!parsed)
      return msiv2::fail("--config " + *config_file + ": " + parsed.error());
    cfg = std::move(*parsed);
  }

  constexpr std::int64_t max_seconds = 10LL * 366 * 24 * 3600;
  for (const auto& [flag, value] : overrides) {
    auto port = [&](std::uint16_t& out) -> result<void> {
      auto n = parse_integer(flag, value, 0, 65535);
      if (!n)
        return n.fail();
      out = static_cast<std::uint16_t>(*n);
      return msiv2::ok();
    };
    auto seconds = [&](std::chrono::seconds& out) -> result<void> {
      auto n = parse_integer(flag, value, 1, max_seconds);
      if (!n)
        return n.fail();
      out = std::chrono::seconds(*n);
      return msiv2::ok();
    };
    result<void> r;
    if (flag == "--ready-file") {
      cfg.ready_file = value;
    } else if (flag == "--state-dir") {
      cfg.state_dir = value;
    } else if (flag == "--tpm-ek-ca") {
      cfg.tpm_ek_ca = value;
    } else if (flag == "--imds-port") {
      r = port(cfg.imds_port);
    } else if (flag == "--attestation-port") {
      r = port(cfg.attestation_port);
    } else if (flag == "--token-port") {
      r = port(cfg.token_port);
    } else if (flag == "--resource-port") {
      r = port(cfg.resource_port);
    } else if (flag == "--admin-port") {
      r = port(cfg.admin_port);
    } else if (flag == "--threads") {
      auto n = parse_integer(flag, value, 1, 64);
      if (!n)
        return n.fail();
      cfg.threads = static_cast<int>(*n);
    } else if (flag == "--v1-only") {
      cfg.v1_only = true;
    } else if (flag == "--attestation") {
      if (value == "off")
        cfg.attestation = msiv2::sim::attestation_policy::off;
      else if (value == "optional")
        cfg.attestation = msiv2::sim::attestation_policy::optional;
      else if (value == "required")
        cfg.attestation = msiv2::sim::attestation_policy::required;
      else
        return msiv2::fail("--attestation: must be off, optional or required, got '" + value + "'");
    } else if (flag == "--cert-lifetime") {
      r = seconds(cfg.cert_lifetime);
    } else if (flag == "--token-lifetime") {
      r = seconds(cfg.token_lifetime);
    } else if (flag == "--attestation-lifetime") {
      r = seconds(cfg.attestation_lifetime);
    } else if (flag == "--refresh-in") {
      std::chrono::seconds s{0};
      r = seconds(s);
      cfg.refresh_in = s;
    } else if (flag == "--token-not-after") {
      std::chrono::seconds s{0};
      r = seconds(s);
      cfg.token_not_after = s;
    } else if (flag == "--csr-profile") {
      if (value == "strict")
        cfg.csr_profile = msiv2::platform::csr_profile::strict;
      else if (value == "lenient")
        cfg.csr_profile = msiv2::platform::csr_profile::lenient;
      else
        return msiv2::fail("--csr-profile: must be strict or lenient, got '" + value + "'");
    }
    if (!r)
      return r.fail();
  }
  if (auto r = msiv2::sim::validate_config(cfg); !r)
    return msiv2::fail("invalid configuration: " + r.error());
  return cfg;
}

int serve(int argc, char** argv) {
  auto cfg = parse_serve_args(argc, argv);
  if (!cfg)
    return usage_error(cfg.error());

  // Block the stop signals in every thread (the I/O threads inherit the mask) and take them
  // synchronously below: no work happens in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto sim = msiv2::sim::simulator::start(std::move(*cfg));
  if (!sim) {
    std::fprintf(stderr, "msiv2-sim: cannot start: %s\n", sim.error().c_str());
    return 1;
  }
  const auto& u = (*sim)->urls();
  std::printf("msiv2-sim %s serving\n"
              "  imds         %s\n"
              "  attestation  %s\n"
              "  token        %s\n"
              "  resource     %s\n"
              "  admin        %s  (Authorization: Bearer %s)\n"
              "  ca_file      %s\n",
              msiv2::version(), u.imds.c_str(), u.attestation.c_str(), u.token.c_str(),
              u.resource.c_str(), u.admin.c_str(), u.admin_token.c_str(), u.ca_file.c_str());
  std::fflush(stdout);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  std::printf("msiv2-sim: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  std::fflush(stdout);
  (*sim)->stop();
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2)
    return usage_error("missing command");
  std::string_view cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(usage_text, stdout);
    return 0;
  }
  if (cmd == "--version") {
    std::printf("msiv2-sim %s\n", msiv2::version());
    return 0;
  }
  if (cmd == "serve")
    return serve(argc, argv);
  if (cmd == "demo")
    return msiv2::tools::run_demo(argc, argv);
  return usage_error("unknown command '" + std::string(cmd) + "'");
}

} // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "msiv2-sim: internal error: %s\n", e.what());
    return 1;
  }
}
