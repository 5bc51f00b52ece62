"""Real-data download clients: GDC/TCGA, GTEx, GEO, UCSC Xena and the MCAT signatures.

``http`` holds the one downloader every client uses (streamed, resumable with Range, retrying
with backoff on 429/5xx, md5-verified, token-aware, proxy-aware); ``manifest`` the cohort
definitions and the plan the rules in ``workflow/rules/download.smk`` ask; ``steps`` the
pipeline steps.  URLs, project lists and filters live in ``resources/download/*.yaml``.
"""
