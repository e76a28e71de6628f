"""The legacy buffer use case: the mainframe's record contract and where each record's status is kept."""
