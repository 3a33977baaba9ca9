"""The operator console under /admin: server-rendered pages, no script (the portal's CSP).

    GET  /admin                               dashboard (every console role)
    GET  /admin/people?q=                     search people and certificates
    GET  /admin/people/{login}                a person: certificates, escrow, invitations,
                                              directory entry, audit trail
    GET  /admin/certificates/{serial}         a certificate
    GET  /admin/certificates/{serial}/revoke  the confirmation step (reason chosen)
    POST /admin/certificates/{serial}/revoke  revoke (confirmed)
    GET  /admin/invitations                   invite one person or a CSV of logins
    POST /admin/invitations, /admin/invitations/csv
    GET  /admin/requests                      enrollment requests waiting for an officer
    POST /admin/requests/{id}                 approve or reject
    GET  /admin/recovery                      recovery requests, approvals, the report
    GET  /admin/audit                         the audit log, filtered and paged
    GET  /admin/settings                      the settings, read-only, secrets hidden

Who may see what is policy/operator_roles.py; the roles of a logged-on identity come
from instance/console_access.py. Every form carries the session's CSRF token.
"""

from mailpki.web.console.routes import ConsoleContext, console_routes

__all__ = ["ConsoleContext", "console_routes"]
