"""The local HTTP service (`face-match-age serve`) and its page: compare two photos or age one from a browser or
over HTTP, with the models loaded once and requests that arrive together sharing the networks' batches."""
