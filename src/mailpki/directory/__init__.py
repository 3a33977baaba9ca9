"""The directory port: who people are (name, mail, organisation, site, groups), whether
their password is right, and where their certificates are published. Adapters: LDAP
(OpenLDAP, Active Directory) and the embedded directory in the instance database."""
