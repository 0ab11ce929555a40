"""Pictures a person judges a run by: contact sheets of faces and pairs, bounded in size."""
