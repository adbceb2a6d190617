// SPDX-License-Identifier: MIT
//
// Authorization: the single decision whether an authenticated identity
// may perform an action on a thread. Isolation between owners is enforced
// by the thread-service (every statement is constrained by owner); this is
// the place for policy on top of it. Today every authenticated identity
// may do everything with its own threads. A later policy - read-only users,
// required scopes such as "threads:write" - is a change to gw_authorize()
// only: the gateway calls it once per request, after Authenticate and
// before any thread-service rpc.
#include <stddef.h>

#include "gateway/gw.h"

const char *
gw_action_name(gw_action act)
{
	switch (act) {
	case GW_ACT_CREATE:
		return ("threads:create");
	case GW_ACT_READ:
		return ("threads:read");
	case GW_ACT_UPDATE:
		return ("threads:update");
	case GW_ACT_DELETE:
		return ("threads:delete");
	case GW_ACT_SEARCH:
		return ("threads:search");
	case GW_ACT_NONE:
	default:
		return ("none");
	}
}

cm_err
gw_authorize(const gw_identity *who, gw_action act, const char *thread_id)
{
	(void) thread_id;
	// Fail closed: without an identity nothing is allowed, whatever the
	// action.
	if (who == NULL || who->id == NULL || who->id[0] == '\0') {
		return (CM_EAUTH);
	}
	switch (act) {
	case GW_ACT_CREATE:
	case GW_ACT_READ:
	case GW_ACT_UPDATE:
	case GW_ACT_DELETE:
	case GW_ACT_SEARCH:
		return (CM_OK);
	case GW_ACT_NONE:
	default:
		// Meta routes never ask; an unknown action is refused.
		return (CM_EPERM);
	}
}
