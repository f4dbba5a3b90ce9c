// The JS MailStore class (store_napi.cc) and how the reactor reaches the C++ store behind one.
#pragma once
#include <napi.h>

#include <memory>

#include "fast.h"

namespace clove::fast {

// The store behind a JS MailStore object; throws a JS TypeError for anything else.
std::shared_ptr<MailStore> UnwrapMailStore(const Napi::Value& v);

}  // namespace clove::fast
