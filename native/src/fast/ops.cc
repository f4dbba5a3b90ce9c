// STUB (issue 12 helper "store" replaces this file): every call goes to JavaScript.
#include "fast.h"

namespace clove::fast {

Verdict Serve(MailStore&, const Call&, std::string&, ParkedRecv*) { return Verdict::ToJs; }
bool Resume(MailStore&, const ParkedRecv&, bool timed_out, std::string&) { return timed_out; }
size_t PushMessages(MailStore&, uint32_t, Holder, size_t, std::string&) { return 0; }

}  // namespace clove::fast
