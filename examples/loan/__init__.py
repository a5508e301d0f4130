"""A loan process (workflow automation): application, credit check, an underwriter's approval
waited for up to 3 days with a reminder after 1, then the payout. See `examples.loan.process`."""
