#pragma once

// The public API of msiv2 in one header; installed as <msiv2/msiv2.hpp>.
//
//   #include <msiv2/msiv2.hpp>
//   auto c = msiv2::client::create();   // settings from the environment
//
// Everything an embedder needs: msiv2::client and client_options, module_config,
// token_request and token_result, the errors (error_code, make_msiv2_error), the CAF handle
// types (msiv2::module, token_service), apply_defaults for an embedder's actor_system, the
// binding key and io::client_identity to present the binding on a resource call, version().
// Public headers include each other as "msiv2/<folder>/<file>.hpp" (see CMakeLists.txt).

#include "msiv2/actors/client.hpp"
#include "msiv2/actors/supervisor.hpp"
#include "msiv2/actors/system.hpp"
#include "msiv2/io/http.hpp"
#include "msiv2/messages/errors.hpp"
#include "msiv2/messages/protocol.hpp"
#include "msiv2/messages/token.hpp"
#include "msiv2/messages/version.hpp"
#include "msiv2/platform/binding.hpp"
